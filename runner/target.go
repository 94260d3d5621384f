package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"

	"github.com/labctl/labctl/checks"
)

var _ checks.Target = (*Instance)(nil)

// Command returns a command that runs argv inside all of the host's
// namespaces and its cgroup. It has not started yet.
func (in *Instance) Command(ctx context.Context, host string, argv ...string) (*exec.Cmd, error) {
	h, err := in.host(host)
	if err != nil {
		return nil, err
	}
	if len(argv) == 0 {
		return nil, errors.New("no command to run")
	}
	return sandboxCommand(ctx, h, hostEnv(), argv...), nil
}

// InitPID is the machine-side PID of the host's PID 1.
func (in *Instance) InitPID(host string) (int, error) {
	h, err := in.host(host)
	if err != nil {
		return 0, err
	}
	return h.InitPID, nil
}

// CgroupDir is the machine-side directory of the host's cgroup for a
// controller (on unified v2 the same directory for every controller).
func (in *Instance) CgroupDir(host, controller string) (string, error) {
	h, err := in.host(host)
	if err != nil {
		return "", err
	}
	dir := cgroupDir(h, controller)
	if dir == "" {
		return "", fmt.Errorf("host %s has no %s cgroup on this machine", host, controller)
	}
	return dir, nil
}

// NetNSPath is the host's named network namespace.
func (in *Instance) NetNSPath(host string) (string, error) {
	h, err := in.host(host)
	if err != nil {
		return "", err
	}
	return h.NetNS, nil
}

// RootPath maps a path inside the host to one the machine can open.
func (in *Instance) RootPath(host, path string) (string, error) {
	h, err := in.host(host)
	if err != nil {
		return "", err
	}
	return rootPath(h, path), nil
}

// Fact returns one of the instance's facts.
func (in *Instance) Fact(name string) (string, bool) {
	v, ok := in.facts[name]
	return v, ok
}

// Shell runs argv (or, when empty, an interactive shell with a prompt
// naming the lab and host) inside a host, wired to the given streams,
// and returns its exit code.
func (in *Instance) Shell(ctx context.Context, host string, argv []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	h, err := in.host(host)
	if err != nil {
		return -1, err
	}
	env := append(hostEnv(), "LABCTL_LAB="+in.LabName, "LABCTL_HOST="+h.Name)
	if term := os.Getenv("TERM"); term != "" {
		env = append(env, "TERM="+term)
	}
	if len(argv) == 0 {
		argv = interactiveShell()
		env = append(env, `PS1=[`+in.LabName+":"+h.Name+`] \w# `)
	}
	cmd := sandboxCommand(ctx, h, env, argv...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	err = cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), nil
	}
	if err != nil {
		return -1, fmt.Errorf("run %s on %s: %w", argv[0], h.Name, err)
	}
	return 0, nil
}

// interactiveShell prefers bash without rc files (they could override
// the lab prompt) and falls back to sh. Hosts share the machine's /usr.
func interactiveShell() []string {
	if _, err := exec.LookPath("bash"); err == nil {
		return []string{"bash", "--norc", "--noprofile"}
	}
	return []string{"sh"}
}
