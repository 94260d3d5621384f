package fs

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/labctl/labctl/faults"
	"github.com/labctl/labctl/labs"
)

// ReadonlyParams are the `with:` of fs.readonly.
type ReadonlyParams struct {
	Mount   string `yaml:"mount" json:"mount" doc:"mount point of a lab-local filesystem of the host (declare it under the host's mounts)" required:"true"`
	User    string `yaml:"user,omitempty" json:"user,omitempty" doc:"the lab user the writer runs as (default root)"`
	Service string `yaml:"service,omitempty" json:"service,omitempty" doc:"the writer's name as ps shows it (default recorder)"`
	Dir     string `yaml:"dir,omitempty" json:"dir,omitempty" doc:"directory it writes in, on the mount (default <mount>/<service>)"`
	File    string `yaml:"file,omitempty" json:"file,omitempty" doc:"the file it appends to, in dir (default <service>.log)"`
}

// Validate checks the params before anything is created.
func (p *ReadonlyParams) Validate() error {
	f := FullParams{Mount: p.Mount, Mode: "bytes", User: p.User, Service: p.Service, Dir: p.Dir, File: p.File}
	return f.Validate()
}

type readonlyKind struct{}

func init() {
	faults.Register(labs.FaultKind{
		Name:      "fs.readonly",
		Doc:       "a lab-local filesystem is remounted read-only under a running writer (as errors=remount-ro would); it fails with EROFS and mount/findmnt show ro",
		NewParams: func() any { return &ReadonlyParams{Service: "recorder"} },
		Facts:     writerFacts(),
	}, readonlyKind{})
}

func (readonlyKind) Apply(ctx context.Context, env faults.Env, f *labs.Fault, params any) (*faults.Applied, error) {
	p := params.(*ReadonlyParams)
	h, err := env.Host(f.Host)
	if err != nil {
		return nil, err
	}
	applied := &faults.Applied{}
	w, err := startWriter(ctx, h, p.Mount, p.Dir, p.File, p.User, p.Service, serviceParams{Role: roleWriter}, applied)
	if err != nil {
		return applied, err
	}
	hb := h.RootPath(w.facts["heartbeat"])
	if err := poll(ctx, p.Service+" to write", func() (bool, error) {
		_, err := os.Stat(hb)
		return err == nil, nil
	}); err != nil {
		return applied, err
	}
	if err := run(ctx, h, "mount", "-o", "remount,ro", p.Mount); err != nil {
		return applied, err
	}
	// Observable: the mount is read-only and the writer was refused.
	if err := poll(ctx, p.Service+" to fail with EROFS", func() (bool, error) {
		m, err := mountOf(h, p.Mount)
		if err != nil {
			return false, err
		}
		ro := strings.HasPrefix(m.Options, "ro,") || m.Options == "ro"
		return ro && strings.Contains(readInHost(h, w.facts["log"]), "read-only file system"), nil
	}); err != nil {
		return applied, fmt.Errorf("remount %s read-only: %w", p.Mount, err)
	}
	applied.Facts = w.facts
	return applied, nil
}

// Revert stops the writer; the filesystem is the host's and goes with it.
func (readonlyKind) Revert(ctx context.Context, env faults.Env, f *labs.Fault, state json.RawMessage) error {
	stopAll(state)
	return nil
}
