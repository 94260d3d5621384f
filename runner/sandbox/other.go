//go:build !linux

package sandbox

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
)

// Hosts are made of Linux namespaces and cgroups; elsewhere labctl still
// builds and says why it cannot run labs.
func errUnsupported() error {
	return &SupportError{Msg: "lab hosts need Linux namespaces and cgroups", Hint: "run the lab in the Vagrant VM: labctl up --vm LAB"}
}

// DetectLayout fails off Linux.
func DetectLayout() (Layout, error) { return 0, errUnsupported() }

// CheckSupport says hosts need Linux.
func CheckSupport() error { return errUnsupported() }

// Start fails off Linux.
func Start(ctx context.Context, spec Spec, rec Recorder) (*Host, error) { return nil, errUnsupported() }

// Release fails off Linux.
func Release(ctx context.Context, kind, name string, data json.RawMessage) error {
	return errUnsupported()
}

// Alive is always false off Linux.
func Alive(h *Host) bool { return false }

// Stop fails off Linux.
func Stop(ctx context.Context, h *Host) error { return errUnsupported() }

// Command returns a command that fails to start off Linux.
func Command(ctx context.Context, h *Host, env []string, argv ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "false")
	cmd.Err = errUnsupported()
	return cmd
}

// AddMount fails off Linux.
func AddMount(ctx context.Context, h *Host, stateDir string, m Mount, rec Recorder) error {
	return errUnsupported()
}

// CommandSpec describes a command to run inside a host (Linux only).
type CommandSpec struct {
	Path       string
	Argv       []string
	Env        []string
	ExtraFiles []*os.File
	Service    bool
	ReportPID  *os.File
}

// CommandWith returns a command that fails to start off Linux.
func CommandWith(ctx context.Context, h *Host, spec CommandSpec) *exec.Cmd {
	return Command(ctx, h, spec.Env, spec.Argv...)
}

// StartService fails off Linux.
func StartService(ctx context.Context, h *Host, spec CommandSpec) (int, error) {
	return 0, errUnsupported()
}

// RemoveCgroupTree fails off Linux.
func RemoveCgroupTree(ctx context.Context, top string) error { return errUnsupported() }

// ReleaseNetnsDir has nothing to do off Linux.
func ReleaseNetnsDir() error { return nil }
