package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestNotRoot runs the real binary as an unprivileged user: every command
// that needs the machine says what to do and exits 3; the catalog still works.
func TestNotRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch to an unprivileged user")
	}
	// A copy named labctl, in a directory the unprivileged user can reach
	// (the test's own temp dirs are private to root).
	dir, err := os.MkdirTemp("/var/tmp", "labctl-notroot-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "labctl")
	copyFile(t, bin)

	run := func(args ...string) (int, string, string) {
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + dir}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("labctl %s: %v", strings.Join(args, " "), err)
		}
		return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
	}

	for _, args := range [][]string{{"up", "first-look"}, {"status"}, {"down", "--all"}, {"gc"}, {"check"}, {"test", "first-look"}} {
		code, _, stderr := run(args...)
		if code != exitEnviron {
			t.Errorf("labctl %s as nobody: exit %d, want %d; stderr:\n%s", strings.Join(args, " "), code, exitEnviron, stderr)
		}
		if !strings.Contains(stderr, "root") || !strings.Contains(stderr, "what to do") {
			t.Errorf("labctl %s as nobody: stderr does not say what to do:\n%s", strings.Join(args, " "), stderr)
		}
	}
	if code, stdout, stderr := run("list"); code != 0 || !strings.Contains(stdout, "first-look") {
		t.Errorf("labctl list as nobody: exit %d\n%s%s", code, stdout, stderr)
	}
}

func copyFile(t *testing.T, dst string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
