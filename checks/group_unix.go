//go:build unix

package checks

import (
	"os/exec"
	"syscall"
)

// killGroupOnCancel starts cmd in its own process group and kills the
// whole group when its context ends.
func killGroupOnCancel(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
