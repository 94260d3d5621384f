package vm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// DirEnv names the directory holding the labctl Vagrantfile when labctl is
// not run from inside the repository.
const DirEnv = "LABCTL_VAGRANT_DIR"

// Vagrant runs the vagrant CLI against one Vagrantfile's directory.
type Vagrant struct {
	Bin    string // the vagrant executable
	Dir    string // where the Vagrantfile is; vagrant runs there
	Env    []string
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

// New finds vagrant and the Vagrantfile: $LABCTL_VAGRANT_DIR, else the
// nearest directory from the working directory up that has one.
func New(stdin io.Reader, stdout, stderr io.Writer) (*Vagrant, error) {
	bin, err := exec.LookPath("vagrant")
	if err != nil {
		return nil, &Error{Env: true, Msg: "VM mode needs Vagrant, and vagrant is not on PATH",
			Hint: "install it: on Debian `apt-get install --no-install-recommends vagrant vagrant-libvirt libvirt-daemon-system qemu-system-x86 qemu-utils` (or `make deps-vm`); elsewhere https://developer.hashicorp.com/vagrant/install plus VirtualBox"}
	}
	dir, err := FindDir()
	if err != nil {
		return nil, err
	}
	return &Vagrant{Bin: bin, Dir: dir, Stdin: stdin, Stdout: stdout, Stderr: stderr}, nil
}

// FindDir returns the directory of the labctl Vagrantfile.
func FindDir() (string, error) {
	if d := os.Getenv(DirEnv); d != "" {
		if _, err := os.Stat(filepath.Join(d, "Vagrantfile")); err != nil {
			return "", &Error{Msg: fmt.Sprintf("$%s=%s has no Vagrantfile", DirEnv, d),
				Hint: "point it at a checkout of the labctl repository"}
		}
		return d, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "Vagrantfile")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			break
		}
	}
	return "", &Error{Msg: "no Vagrantfile in " + wd + " or above",
		Hint: "run labctl from the labctl repository, or set " + DirEnv + " to it"}
}

// Command returns the exec.Cmd for `vagrant args...`, run in the
// Vagrantfile's directory with the Vagrant's streams.
func (v *Vagrant) Command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, v.Bin, args...)
	cmd.Dir = v.Dir
	cmd.Env = append(os.Environ(), v.Env...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = v.Stdin, v.Stdout, v.Stderr
	return cmd
}

// Run runs `vagrant args...` with its output streamed to the user and its
// tail kept: a failure comes back as an *Error that says what to do when
// the output matches a known cause. It returns vagrant's exit code.
func (v *Vagrant) Run(ctx context.Context, args ...string) (int, error) {
	return v.run(ctx, Classify, true, args...)
}

// SSH runs remote (an argv, see SSHArgs) in the VM and returns its exit
// code; an error only when vagrant itself failed.
func (v *Vagrant) SSH(ctx context.Context, remote []string, tty bool) (int, error) {
	// Only stderr is read for Vagrant's complaints: stdout is the remote
	// command's and may be large (labctl test) or binary.
	return v.run(ctx, ClassifySSH, false, SSHArgs(remote, tty)...)
}

func (v *Vagrant) run(ctx context.Context, classify func(string) *Error, stdoutToo bool, args ...string) (int, error) {
	cmd := v.Command(ctx, args...)
	tail := &tailBuffer{max: 64 << 10}
	if stdoutToo {
		cmd.Stdout = teeTo(v.Stdout, tail)
	}
	cmd.Stderr = teeTo(v.Stderr, tail)
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &exit):
		if e := classify(tail.String()); e != nil {
			return exit.ExitCode(), e
		}
		return exit.ExitCode(), nil
	default:
		return -1, fmt.Errorf("vagrant %s: %w", args[0], err)
	}
}

// SSHArgs is the argv of `vagrant ssh` running remote (an argv) in the VM;
// without remote, an interactive login shell. tty asks for a terminal (a
// learner's shell); without it output stays byte-exact for pipes (--json).
func SSHArgs(remote []string, tty bool) []string {
	if len(remote) == 0 {
		return []string{"ssh"}
	}
	args := []string{"ssh", "-c", Join(remote)}
	if !tty {
		args = append(args, "--no-tty")
	}
	return args
}

// LabctlArgv is the remote argv of labctl run as root in the VM, where the
// provisioner installed it on PATH.
func LabctlArgv(args []string) []string {
	return append([]string{"sudo", "labctl"}, args...)
}

func teeTo(w io.Writer, tail *tailBuffer) io.Writer {
	if w == nil {
		return tail
	}
	return io.MultiWriter(w, tail)
}

// tailBuffer keeps the last max bytes written: enough of vagrant's output
// to classify an error, however long `vagrant up` talked.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf bytes.Buffer
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf.Write(p)
	if over := t.buf.Len() - t.max; over > 0 {
		t.buf.Next(over)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.buf.String()
}

// HasBox reports whether `vagrant box list` has name for libvirt.
func (v *Vagrant) HasBox(ctx context.Context, name string) bool {
	cmd := v.Command(ctx, "box", "list")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, nil, nil
	out, err := cmd.Output()
	if err != nil {
		return false
	}
	return hasBox(string(out), name, "libvirt")
}

// hasBox finds "NAME (PROVIDER, VERSION)" in `vagrant box list` output.
func hasBox(list, name, provider string) bool {
	for _, line := range strings.Split(list, "\n") {
		f := strings.Fields(strings.NewReplacer("(", " ", ")", " ", ",", " ").Replace(line))
		if len(f) >= 2 && f[0] == name && f[1] == provider {
			return true
		}
	}
	return false
}

// AddBox adds (or replaces) the box file as name.
func (v *Vagrant) AddBox(ctx context.Context, name, file string) error {
	code, err := v.Run(ctx, "box", "add", "--force", "--name", name, file)
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("vagrant box add %s %s: exit %d", name, file, code)
	}
	return nil
}
