//go:build !linux

package sandbox

import (
	"context"
	"encoding/json"
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
