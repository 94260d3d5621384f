// Package dstate holds process.dstate: a process stuck in uninterruptible
// sleep for real, on a frozen filesystem (mode freeze) or on a FUSE
// filesystem whose reads never answer (mode fuse). Both are undone from
// the ledger alone, thaw or abort first, so a crash plus gc leaves nothing.
package dstate

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"

	"github.com/labctl/labctl/faults"
	"github.com/labctl/labctl/internal/reexec"
	"github.com/labctl/labctl/labs"
)

type kind struct{}

func init() {
	faults.Register(labs.FaultKind{
		Name: "process.dstate",
		Doc:  "a process stuck in uninterruptible sleep (D): writing to a frozen ext4 filesystem (mode freeze) or reading from a FUSE filesystem that never answers (mode fuse)",
		NewParams: func() any {
			return &FreezeParams{Mode: "freeze", Mount: "/srv/data", Size: 16 << 20}
		},
		Facts: []labs.FactSpec{
			{Name: "pid", Doc: "machine-side PID of the stuck process"},
			{Name: "ns_pid", Doc: "its PID as seen inside the host"},
			{Name: "service", Doc: "its name"},
			{Name: "mount", Doc: "the mount point it is stuck on, inside the host"},
			{Name: "file", Doc: "the file it writes or reads"},
			{Name: "mode", Doc: "freeze or fuse"},
			{Name: "device", Doc: "the mount's source (the loop device for freeze)"},
			{Name: "server", Doc: "fuse: the FUSE server's name"},
			{Name: "server_ns_pid", Doc: "fuse: the FUSE server's PID inside the host"},
		},
	}, kind{})
	faults.RegisterResource(resFreeze, releaseFreeze)
	faults.RegisterResource(resFuse, releaseFuse)
	// ps and /proc/PID/status show the main thread's state: the stuck
	// write or read must happen on it, so lock the main goroutine there
	// (an init function runs on the main goroutine) in these helpers.
	switch os.Getenv(reexec.EnvHelper) {
	case writerHelper, readerHelper:
		runtime.LockOSThread()
	}
	reexec.Register(writerHelper, runWriter)
	reexec.Register(fuseHelper, runFuseServer)
	reexec.Register(readerHelper, runReader)
}

func (kind) Apply(ctx context.Context, env faults.Env, f *labs.Fault, params any) (*faults.Applied, error) {
	p := params.(*FreezeParams)
	switch p.Mode {
	case "freeze":
		if p.Service == "" {
			p.Service = "backup"
		}
		if p.File == "" {
			p.File = "data.bin"
		}
		return applyFreeze(ctx, env, f, p)
	case "fuse":
		if p.Service == "" {
			p.Service = "indexer"
		}
		if p.Server == "" {
			p.Server = "archivefs"
		}
		if p.File == "" {
			p.File = "report.csv"
		}
		return applyFuse(ctx, env, f, p)
	}
	return nil, fmt.Errorf("mode %q: want freeze or fuse", p.Mode)
}

// Revert thaws or aborts; the processes and the mount go with the host.
func (kind) Revert(ctx context.Context, env faults.Env, f *labs.Fault, state json.RawMessage) error {
	var probe struct {
		Mode string `json:"mode"`
	}
	_ = json.Unmarshal(state, &probe)
	if probe.Mode == "fuse" {
		return revertFuse(ctx, state)
	}
	return revertFreeze(state)
}
