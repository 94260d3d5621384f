package fs

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/labctl/labctl/faults"
	"github.com/labctl/labctl/labs"
)

// FullParams are the `with:` of fs.full.
type FullParams struct {
	Mount   string `yaml:"mount" json:"mount" doc:"mount point of a lab-local filesystem of the host (declare it under the host's mounts)" required:"true"`
	Mode    string `yaml:"mode,omitempty" json:"mode,omitempty" doc:"bytes (one file grows until no block is left, default) or inodes (one small file per record until no inode is left)"`
	User    string `yaml:"user,omitempty" json:"user,omitempty" doc:"the lab user the writer runs as (default root)"`
	Service string `yaml:"service,omitempty" json:"service,omitempty" doc:"the writer's name as ps shows it (default logger)"`
	Dir     string `yaml:"dir,omitempty" json:"dir,omitempty" doc:"directory it writes in, on the mount (default <mount>/<service>)"`
	File    string `yaml:"file,omitempty" json:"file,omitempty" doc:"bytes: the file it appends to, in dir (default <service>.log)"`
}

// Validate checks the params before anything is created.
func (p *FullParams) Validate() error {
	switch {
	case !validPath(p.Mount):
		return &labs.ParamError{Field: "mount", Msg: "want an absolute, clean path"}
	case p.Mode != "bytes" && p.Mode != "inodes":
		return &labs.ParamError{Field: "mode", Msg: fmt.Sprintf("%q is not bytes or inodes", p.Mode)}
	case p.User != "" && !accountRe.MatchString(p.User):
		return &labs.ParamError{Field: "user", Msg: "want a lab user's name"}
	case !commRe.MatchString(p.Service):
		return &labs.ParamError{Field: "service", Msg: "want 1-15 letters, digits, '.', '_' or '-' (a process name)"}
	case p.Dir != "" && (!validPath(p.Dir) || !strings.HasPrefix(p.Dir+"/", p.Mount+"/")):
		return &labs.ParamError{Field: "dir", Msg: "want an absolute, clean path on the mount"}
	case p.File != "" && (strings.Contains(p.File, "/") || p.File == "." || p.File == ".."):
		return &labs.ParamError{Field: "file", Msg: "want a plain file name"}
	}
	return nil
}

type fullKind struct{}

func init() {
	faults.Register(labs.FaultKind{
		Name:      "fs.full",
		Doc:       "a writer fills a lab-local filesystem (bytes) or exhausts its inodes with small files; it then fails with ENOSPC, and df -h or df -i tells which",
		NewParams: func() any { return &FullParams{Mode: "bytes", Service: "logger"} },
		Facts:     append(writerFacts(), labs.FactSpec{Name: "mode", Doc: "bytes or inodes: what ran out"}),
	}, fullKind{})
}

// writerFacts are the facts of a writer service on a lab filesystem.
func writerFacts() []labs.FactSpec {
	return []labs.FactSpec{
		{Name: "mount", Doc: "the filesystem's mount point"},
		{Name: "device", Doc: "its source device (e.g. /dev/loop3, or tmpfs)"},
		{Name: "fstype", Doc: "its filesystem type"},
		{Name: "dir", Doc: "the directory the service writes in"},
		{Name: "file", Doc: "the file it appends to (bytes)"},
		{Name: "service", Doc: "the writer's name"},
		{Name: "pid", Doc: "its machine-side PID"},
		{Name: "ns_pid", Doc: "its PID inside the host"},
		{Name: "user", Doc: "the user it runs as"},
		{Name: "log", Doc: "its error log (in /tmp)"},
		{Name: "heartbeat", Doc: "a file it rewrites with the time after each successful write (in /tmp)"},
	}
}

// writer is a started writer service and its facts.
type writer struct {
	pid   int
	facts map[string]string
}

// startWriter prepares dir on a lab-local mount and starts a writer there.
func startWriter(ctx context.Context, h faults.Host, mount, dir, file, user, service string, sp serviceParams, applied *faults.Applied) (*writer, error) {
	m, err := requireLabLocal(h, mount)
	if err != nil {
		return nil, fmt.Errorf("mount: %w", err)
	}
	if m.Point != mount {
		return nil, fmt.Errorf("mount: %s is not a mount point of host %s (it is on %s); declare it under the host's mounts", mount, h.Name(), m.Point)
	}
	if dir == "" {
		dir = filepath.Join(mount, service)
	}
	if file == "" {
		file = service + ".log"
	}
	owner := "root"
	if user != "" {
		owner = user
	}
	logPath, heartbeat := "/tmp/"+service+".log", "/tmp/"+service+".heartbeat"
	for _, s := range [][]string{{"mkdir", "-p", dir}, {"chown", owner, dir}, {"rm", "-f", heartbeat}} {
		if err := run(ctx, h, s...); err != nil {
			return nil, err
		}
	}
	sp.Name, sp.User, sp.Log, sp.Heartbeat, sp.Dir, sp.File = service, user, logPath, heartbeat, dir, filepath.Join(dir, file)
	pid, err := startService(ctx, h, faults.ServiceSpec{Helper: serviceHelper, Comm: service, Args: []string{"--out", dir}, Params: sp})
	applied.State, _ = json.Marshal(serviceState{PIDs: []int{pid}, Names: []string{service}})
	if err != nil {
		return nil, err
	}
	ns, err := nsPID(pid)
	if err != nil {
		return nil, err
	}
	return &writer{pid: pid, facts: map[string]string{
		"mount": mount, "device": m.Source, "fstype": m.FSType, "dir": dir, "file": sp.File, "service": service,
		"pid": strconv.Itoa(pid), "ns_pid": strconv.Itoa(ns), "user": owner, "log": logPath, "heartbeat": heartbeat,
	}}, nil
}

func (fullKind) Apply(ctx context.Context, env faults.Env, f *labs.Fault, params any) (*faults.Applied, error) {
	p := params.(*FullParams)
	h, err := env.Host(f.Host)
	if err != nil {
		return nil, err
	}
	applied := &faults.Applied{}
	w, err := startWriter(ctx, h, p.Mount, p.Dir, p.File, p.User, p.Service, serviceParams{Role: roleWriter, Fill: true, Inodes: p.Mode == "inodes"}, applied)
	if err != nil {
		return applied, err
	}
	// Observable: the kernel reports the filesystem exhausted, and the
	// writer has been refused with ENOSPC.
	if err := poll(ctx, p.Mount+" to fill up", func() (bool, error) {
		var st unix.Statfs_t
		if err := unix.Statfs(h.RootPath(p.Mount), &st); err != nil {
			return false, err
		}
		full := st.Bavail == 0
		if p.Mode == "inodes" {
			full = st.Ffree == 0
		}
		return full && strings.Contains(readInHost(h, w.facts["log"]), "no space left on device"), nil
	}); err != nil {
		return applied, err
	}
	w.facts["mode"] = p.Mode
	applied.Facts = w.facts
	return applied, nil
}

func (fullKind) Revert(ctx context.Context, env faults.Env, f *labs.Fault, state json.RawMessage) error {
	stopAll(state)
	return nil
}
