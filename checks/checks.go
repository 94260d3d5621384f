// Package checks holds the check engine: answer matchers and state-probe
// kinds. Each probe kind lives in its own file, implements Prober and
// registers itself from init with Register.
//
// Probes run from the machine side, outside the learner's reach, through
// the Target interface the runner implements.
package checks

import (
	"context"
	"fmt"
	"os/exec"
	"sort"
	"sync"

	"github.com/labctl/labctl/labs"
)

// Target is what a probe may use of a running instance.
type Target interface {
	// Command returns a command that runs argv inside all of the host's
	// namespaces and its cgroup.
	Command(ctx context.Context, host string, argv ...string) (*exec.Cmd, error)
	// InitPID is the machine-side PID of the host's PID 1; every process
	// of the host is in its pid namespace.
	InitPID(host string) (int, error)
	// CgroupDir is the machine-side directory of the host's cgroup for a
	// controller ("memory", "pids", "cpu").
	CgroupDir(host, controller string) (string, error)
	// NetNSPath is the host's network namespace path.
	NetNSPath(host string) (string, error)
	// RootPath maps a path inside the host to a machine-side path.
	RootPath(host, path string) (string, error)
	// Fact returns a fact's value.
	Fact(name string) (string, bool)
	// Facts returns every fact of the instance (name -> value), for
	// rendering templates in answers and probe parameters. The engine
	// does not modify the map.
	Facts() map[string]string
	// Mark returns the value a counter had when the instance recorded a
	// mark (e.g. oom_kill at up or at the last check), for "since" probes.
	Mark(key string) (string, bool)
}

// Result is the outcome of one probe or answer judgement.
type Result struct {
	Pass bool `json:"pass"`
	// Seen is what the probe observed, in words a learner understands.
	Seen string `json:"seen,omitempty"`
	// Wanted is what passing needs; for answers it is hidden unless revealed.
	Wanted string `json:"wanted,omitempty"`
	// Diff is a go-cmp diff where it helps.
	Diff    string `json:"diff,omitempty"`
	Message string `json:"message,omitempty"`
}

// Prober is one probe kind.
type Prober interface {
	// Probe runs once against host with the decoded, rendered params.
	Probe(ctx context.Context, t Target, host string, params any) Result
}

var (
	mu      sync.RWMutex
	probers = map[string]Prober{}
)

// Register adds a probe kind: its driver and its description for the
// loader. Call it from init.
func Register(spec labs.ProbeKind, p Prober) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := probers[spec.Name]; dup {
		panic(fmt.Sprintf("checks: probe kind %q registered twice", spec.Name))
	}
	probers[spec.Name] = p
	labs.RegisterProbe(spec)
}

// Lookup returns the driver of a probe kind.
func Lookup(name string) (Prober, bool) {
	mu.RLock()
	defer mu.RUnlock()
	p, ok := probers[name]
	return p, ok
}

// Names lists the registered probe kinds.
func Names() []string {
	mu.RLock()
	defer mu.RUnlock()
	out := make([]string, 0, len(probers))
	for n := range probers {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
