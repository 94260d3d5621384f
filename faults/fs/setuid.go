package fs

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/labctl/labctl/faults"
	"github.com/labctl/labctl/labs"
)

// SetuidParams are the `with:` of fs.setuid.
type SetuidParams struct {
	Path    string `yaml:"path" json:"path" doc:"where the setuid-root copy is planted; must be on a lab-local filesystem (a mount of the host, or /tmp), so the machine never holds it" required:"true"`
	Program string `yaml:"program,omitempty" json:"program,omitempty" doc:"the program copied (default /bin/bash)"`
}

// Validate checks the params before anything is created.
func (p *SetuidParams) Validate() error {
	switch {
	case !validPath(p.Path):
		return &labs.ParamError{Field: "path", Msg: "want an absolute, clean path"}
	case !validPath(p.Program):
		return &labs.ParamError{Field: "program", Msg: "want an absolute, clean path"}
	}
	return nil
}

// ValidateHost checks what Validate cannot see: the planted file is on a
// filesystem the host declares (or below its own /tmp).
func (p *SetuidParams) ValidateHost(h *labs.Host) error {
	if !onDeclaredMount(h, filepath.Dir(p.Path)) {
		return &labs.ParamError{Field: "path", Msg: notDeclaredMsg(h, p.Path, filepath.Dir(p.Path))}
	}
	return nil
}

type setuidKind struct{}

func init() {
	faults.Register(labs.FaultKind{
		Name:      "fs.setuid",
		Doc:       "a setuid-root copy of a program planted on a lab-local filesystem: find / -perm -4000 finds it among the legitimate ones",
		NewParams: func() any { return &SetuidParams{Program: "/bin/bash"} },
		Facts: []labs.FactSpec{
			{Name: "path", Doc: "the planted setuid file"},
			{Name: "name", Doc: "its base name"},
			{Name: "program", Doc: "the program it is a copy of"},
			{Name: "mount", Doc: "the mount point of the filesystem it is on"},
		},
	}, setuidKind{})
}

func (setuidKind) Apply(ctx context.Context, env faults.Env, f *labs.Fault, params any) (*faults.Applied, error) {
	p := params.(*SetuidParams)
	h, err := env.Host(f.Host)
	if err != nil {
		return nil, err
	}
	// Checked before anything is written: a setuid file on an overlay
	// would sit in the machine's filesystem (the overlay's upper layer).
	m, err := requireLabLocal(h, filepath.Dir(p.Path))
	if err != nil {
		return nil, fmt.Errorf("path: %w", err)
	}
	if err := run(ctx, h, "mkdir", "-p", filepath.Dir(p.Path)); err != nil {
		return nil, err
	}
	if m2, err := requireLabLocal(h, p.Path); err != nil || m2.Point != m.Point {
		return nil, fmt.Errorf("path: %s moved to another filesystem while being created", p.Path)
	}
	if err := run(ctx, h, "install", "-o", "root", "-g", "root", "-m", "4755", p.Program, p.Path); err != nil {
		return nil, err
	}
	// Observable: the file is there, root's, with the setuid bit.
	if err := poll(ctx, p.Path+" to be setuid root", func() (bool, error) {
		st, err := os.Stat(h.RootPath(p.Path))
		return err == nil && st.Mode()&os.ModeSetuid != 0, err
	}); err != nil {
		return nil, err
	}
	return &faults.Applied{Facts: map[string]string{
		"path": p.Path, "name": filepath.Base(p.Path), "program": p.Program, "mount": m.Point,
	}}, nil
}

// Revert has nothing to do: the file lives on a filesystem of the host,
// which goes with it.
func (setuidKind) Revert(context.Context, faults.Env, *labs.Fault, json.RawMessage) error {
	return nil
}
