// Package faults holds the fault drivers. Each kind lives in its own file
// (or sub-package), implements Kind and registers itself from init with
// Register; cmd/labctl wires the sub-packages in with blank imports.
//
// Drivers never import runner: they get the few host operations they need
// through the narrow interfaces below, which the runner implements.
package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"sort"
	"sync"

	"github.com/labctl/labctl/labs"
)

// Host is what a fault may do with one lab host.
type Host interface {
	// Name is the host's name in the lab file.
	Name() string
	// InitPID is the machine-side PID of the host's PID 1.
	InitPID() int
	// Command returns a command that runs argv inside all of the host's
	// namespaces and its cgroup. Its process has not started yet.
	Command(ctx context.Context, argv ...string) *exec.Cmd
	// Service prepares a labctl helper (re-exec'd) that runs inside the
	// host as a service: comm and argv[0] are the service's name, args are
	// what `ps` shows, and params reach the helper out of sight.
	Service(ctx context.Context, spec ServiceSpec) (*exec.Cmd, error)
	// CgroupDir is the machine-side directory of the host's cgroup for a
	// controller ("memory", "pids", "cpu"; on unified v2 all the same).
	CgroupDir(controller string) string
	// NetNSPath is the host's network namespace (/run/netns/...).
	NetNSPath() string
	// RootPath maps a path inside the host's private view to a
	// machine-side path that reaches the same file (/proc/PID/root/...).
	RootPath(path string) string
}

// ServiceSpec describes a helper process playing a broken service.
type ServiceSpec struct {
	Helper string   // registered helper name (see RegisterHelper)
	Comm   string   // the service's name as ps/comm show it, e.g. "worker"
	Args   []string // argv[1:] as ps shows them, e.g. --config /etc/worker.conf
	Params any      // JSON-encoded and passed out of sight
}

// Env is what a fault sees of its instance.
type Env interface {
	InstanceID() string
	Seed() int64
	Host(name string) (Host, error)
	// Record appends a resource to the instance's ledger (synced) before
	// the fault creates it, so teardown and gc find it after a crash.
	Record(kind, name string, data any) error
	// Logf writes a progress line.
	Logf(format string, args ...any)
}

// Applied is what Apply returns: facts for templates and checks, and a
// serialisable record that Revert gets back.
type Applied struct {
	Facts map[string]string
	State json.RawMessage
}

// Kind is one fault kind's driver.
type Kind interface {
	// Apply makes the fault real on f.Host and returns once it is
	// observable (the symptom exists). params is the decoded, rendered
	// `with:` struct (the type NewParams returns).
	Apply(ctx context.Context, env Env, f *labs.Fault, params any) (*Applied, error)
	// Revert undoes Apply. It must be idempotent: already gone is success.
	Revert(ctx context.Context, env Env, f *labs.Fault, state json.RawMessage) error
}

// Contained is implemented by kinds whose whole effect lives inside the
// fault's host: files only in the host's private, throwaway view and
// processes only in its cgroup. Teardown destroys the host right after
// reverting its faults, so it skips Revert for them (a systemd unit's
// revert alone costs several systemctl round trips). A kind that holds
// anything on the machine side (a mount, a loop device, a frozen
// filesystem) must not claim it.
type Contained interface {
	ContainedInHost() bool
}

var (
	mu    sync.RWMutex
	kinds = map[string]Kind{}
)

// Register adds a fault kind: its driver and its description for the
// loader (params type, facts). Call it from init.
func Register(spec labs.FaultKind, k Kind) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := kinds[spec.Name]; dup {
		panic(fmt.Sprintf("faults: kind %q registered twice", spec.Name))
	}
	kinds[spec.Name] = k
	labs.RegisterFault(spec)
}

// Lookup returns the driver of a kind.
func Lookup(name string) (Kind, bool) {
	mu.RLock()
	defer mu.RUnlock()
	k, ok := kinds[name]
	return k, ok
}

// Names lists the registered kinds.
func Names() []string {
	mu.RLock()
	defer mu.RUnlock()
	out := make([]string, 0, len(kinds))
	for n := range kinds {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
