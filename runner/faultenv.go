package runner

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"sort"

	"github.com/labctl/labctl/faults"
	"github.com/labctl/labctl/internal/reexec"
	"github.com/labctl/labctl/labs"
	"github.com/labctl/labctl/runner/sandbox"
)

// faultEnv is the instance as fault drivers see it (faults.Env). It is a
// separate type because Instance's Seed field and the interface's Seed
// method cannot share a name.
type faultEnv struct{ in *Instance }

var _ faults.Env = faultEnv{}

func (e faultEnv) InstanceID() string { return e.in.ID }
func (e faultEnv) Seed() int64        { return e.in.Seed }

func (e faultEnv) Host(name string) (faults.Host, error) {
	h, err := e.in.host(name)
	if err != nil {
		return nil, err
	}
	return faultHost{h: h}, nil
}

// Record appends a driver's resource to the ledger before it exists;
// teardown releases it through the sandbox's Release.
func (e faultEnv) Record(kind, name string, data any) error {
	_, err := e.in.ledger.create(kind, name, data)
	return err
}

func (e faultEnv) Logf(format string, args ...any) { e.in.logf(format, args...) }

// faultHost is one host as fault drivers see it (faults.Host).
type faultHost struct{ h *sandbox.Host }

var _ faults.Host = faultHost{}

func (fh faultHost) Name() string      { return fh.h.Name }
func (fh faultHost) InitPID() int      { return fh.h.InitPID }
func (fh faultHost) NetNSPath() string { return fh.h.NetNS }

func (fh faultHost) Command(ctx context.Context, argv ...string) *exec.Cmd {
	return sandbox.Command(ctx, fh.h, hostEnv(), argv...)
}

func (fh faultHost) CgroupDir(controller string) string { return cgroupDir(fh.h, controller) }

func (fh faultHost) RootPath(path string) string { return rootPath(fh.h, path) }

// Service prepares labctl re-exec'd inside the host as a helper: argv[0]
// is spec.Comm, then spec.Args; LABCTL_HELPER names the helper; the params
// arrive on reexec.ParamsFD (a memfd, never argv or the environment, where
// a learner could read them). The binary is opened by labctl before it
// enters the host and executed by descriptor, so it may live where the
// host cannot see it; /proc/PID/exe is labctl, comm is set by the helper
// (reexec.SetComm).
//
// Lifetime: the returned cmd is a launcher, not the service. Run it (Start
// and Wait): it exits 0 once the service has been exec'd inside the host,
// in a session of its own, as a child of the host's init, which reaps it
// when it dies; it exits 125 when the host is gone and 126/127 when the
// service could not be exec'd. ctx bounds the launch only. A caller that
// Starts it and exits at once still gets the service started (the machine
// reaps the launcher). The service then lives until it exits or the host
// stops; nothing of it outlives the host. The launcher's stdio (nil:
// /dev/null) becomes the service's. For the service's machine-side PID use
// sandbox.StartService.
func (fh faultHost) Service(ctx context.Context, spec faults.ServiceSpec) (*exec.Cmd, error) {
	params, err := paramsFile(spec.Params)
	if err != nil {
		return nil, fmt.Errorf("service %s: %w", spec.Comm, err)
	}
	return sandbox.CommandWith(ctx, fh.h, sandbox.CommandSpec{
		Path:       reexec.Self(),
		Argv:       append([]string{spec.Comm}, spec.Args...),
		Env:        append(hostEnv(), reexec.EnvHelper+"="+spec.Helper),
		ExtraFiles: []*os.File{params},
		Service:    true,
	}), nil
}

func paramsFile(params any) (*os.File, error) {
	fd, err := memfdCreate("params")
	if err != nil {
		return nil, fmt.Errorf("memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "params")
	if params != nil {
		if err := json.NewEncoder(f).Encode(params); err != nil {
			f.Close()
			return nil, err
		}
	}
	if _, err := f.Seek(0, 0); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// hostEnv is the environment commands start with inside a host: enough to
// run tools, nothing of the caller's.
func hostEnv() []string {
	return []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root",
		"LANG=C.UTF-8",
	}
}

func cgroupDir(h *sandbox.Host, controller string) string {
	if h.Layout == sandbox.CgroupV2 {
		return h.Cgroups["unified"]
	}
	return h.Cgroups[controller]
}

func rootPath(h *sandbox.Host, path string) string {
	return fmt.Sprintf("/proc/%d/root%s", h.InitPID, path)
}

// faultRecord is the ledger data of an applied (or half-applied) fault.
type faultRecord struct {
	ID    string          `json:"id"`
	Kind  string          `json:"kind"`
	Host  string          `json:"host"`
	State json.RawMessage `json:"state,omitempty"`
}

// applyFaults applies the lab's faults in order, each recorded before it
// is applied; its facts become "<fault id>.<name>".
func (in *Instance) applyFaults(ctx context.Context) error {
	for i := range in.Lab.Faults {
		if err := in.applyFault(ctx, &in.Lab.Faults[i]); err != nil {
			return err
		}
		if err := in.saveFacts(); err != nil {
			return err
		}
	}
	return nil
}

func (in *Instance) applyFault(ctx context.Context, f *labs.Fault) error {
	kind, ok := faults.Lookup(f.Kind)
	if !ok {
		return fmt.Errorf("fault %s: kind %q is not built into this labctl", f.ID, f.Kind)
	}
	params := labs.CloneParams(f.With)
	if params != nil {
		if err := labs.RenderParams(params, in.facts); err != nil {
			return fmt.Errorf("fault %s: %w", f.ID, err)
		}
	}
	rec := faultRecord{ID: f.ID, Kind: f.Kind, Host: f.Host}
	seq, err := in.ledger.create(kindFault, f.ID, rec)
	if err != nil {
		return err
	}
	in.logf("breaking %s: %s on %s", f.ID, f.Kind, f.Host)
	applied, err := kind.Apply(ctx, faultEnv{in}, f, params)
	if applied != nil && applied.State != nil {
		// Keep the state even when Apply failed half-way: Revert needs it.
		rec.State = applied.State
		if uerr := in.ledger.update(seq, rec); uerr != nil && err == nil {
			err = uerr
		}
	}
	if err != nil {
		return fmt.Errorf("fault %s (%s): %w", f.ID, f.Kind, err)
	}
	for name, v := range applied.Facts {
		in.facts[f.ID+"."+name] = v
	}
	return nil
}

// revertFault undoes one recorded fault. A fault whose host is already
// dead is gone with it.
func (in *Instance) revertFault(ctx context.Context, data json.RawMessage) error {
	var rec faultRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return fmt.Errorf("fault record: %w", err)
	}
	if h, err := in.host(rec.Host); err != nil || !sandbox.Alive(h) {
		return nil
	}
	kind, ok := faults.Lookup(rec.Kind)
	if !ok {
		return fmt.Errorf("revert fault %s: kind %q is not built into this labctl", rec.ID, rec.Kind)
	}
	f := &labs.Fault{ID: rec.ID, Kind: rec.Kind, Host: rec.Host}
	if in.Lab != nil {
		for i := range in.Lab.Faults {
			if in.Lab.Faults[i].ID == rec.ID {
				f = &in.Lab.Faults[i]
			}
		}
	}
	// Faults are released before their host (the ledger runs in reverse),
	// and the host's release destroys what a contained fault made.
	if c, ok := kind.(faults.Contained); ok && c.ContainedInHost() {
		return nil
	}
	if err := kind.Revert(ctx, faultEnv{in}, f, rec.State); err != nil {
		return fmt.Errorf("revert fault %s (%s): %w", rec.ID, rec.Kind, err)
	}
	return nil
}

func sortStrings(s []string) { sort.Strings(s) }

func fileMode(m labs.Mode) os.FileMode {
	mode := os.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		mode |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		mode |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= os.ModeSticky
	}
	return mode
}
