package checks

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as the processes the tests start inside hosts
// (a listener, an fd holder), chosen by this variable, like labctl's own
// re-exec'd helpers.
const envTestHelper = "CHECKS_TEST_HELPER"

func TestMain(m *testing.M) {
	if name := os.Getenv(envTestHelper); name != "" {
		os.Exit(runTestHelper(name, os.Args[1:]))
	}
	os.Exit(m.Run())
}

// runTestHelper plays a service: it renames itself (comm), prepares its
// state, prints "ready" and blocks until killed.
func runTestHelper(name string, args []string) int {
	// /proc/self/comm names the process (its main thread), which is
	// what ps and the probes read; prctl would name only this thread.
	if err := os.WriteFile("/proc/self/comm", []byte(name), 0); err != nil {
		fmt.Fprintln(os.Stderr, "set comm:", err)
		return 1
	}
	var keep []any
	switch name {
	case "api": // listen on args[0]
		ln, err := net.Listen("tcp", args[0])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		keep = append(keep, ln)
	case "leaky": // hold args[0] extra descriptors
		n, _ := strconv.Atoi(args[0])
		for range n {
			f, err := os.Open("/dev/null")
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			keep = append(keep, f)
		}
	case "hog":
		// Allocates only after the go-ahead on stdin, which the test
		// gives once the process is in a memory cgroup with a limit.
		fmt.Println("ready")
		if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
			return 1
		}
		var chunks [][]byte
		for range 1024 { // 1 GiB at most, if the limit were missing
			c := make([]byte, 1<<20)
			for i := 0; i < len(c); i += 4096 {
				c[i] = 1 // touch every page: make it resident
			}
			chunks = append(chunks, c)
		}
		fmt.Fprintln(os.Stderr, "hog: allocated", len(chunks), "MiB without being killed")
		return 1
	default:
		fmt.Fprintln(os.Stderr, "unknown helper", name)
		return 2
	}
	fmt.Println("ready")
	select {} // until killed; keep stays reachable
}

func skipUnlessRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates pid, mount and network namespaces (CI runs as root)")
	}
}

// testHost is one throwaway host of the test target.
type testHost struct {
	initPID int
	// root, when set, replaces the host's filesystem view (for tests
	// that need no namespaces).
	root    string
	cgroups map[string]string
}

// testTarget implements Target over hosts the test made itself.
type testTarget struct {
	mu    sync.Mutex
	hosts map[string]*testHost
	facts map[string]string
	marks map[string]string
	// rootPathCalls counts RootPath calls; afterRootPath, when set, runs
	// after each (the stable_for test steers a flapping file with it).
	rootPathCalls int
	afterRootPath func(call int)
}

func newTestTarget() *testTarget {
	return &testTarget{hosts: map[string]*testHost{}, facts: map[string]string{}, marks: map[string]string{}}
}

func (tt *testTarget) host(name string) (*testHost, error) {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	h, ok := tt.hosts[name]
	if !ok {
		return nil, fmt.Errorf("no host %q", name)
	}
	return h, nil
}

func (tt *testTarget) Command(ctx context.Context, host string, argv ...string) (*exec.Cmd, error) {
	h, err := tt.host(host)
	if err != nil {
		return nil, err
	}
	if h.initPID == 0 {
		return nil, errors.New("host has no namespaces")
	}
	args := append([]string{"--target", strconv.Itoa(h.initPID), "--all", "--"}, argv...)
	return exec.CommandContext(ctx, "nsenter", args...), nil
}

func (tt *testTarget) InitPID(host string) (int, error) {
	h, err := tt.host(host)
	if err != nil {
		return 0, err
	}
	return h.initPID, nil
}

func (tt *testTarget) CgroupDir(host, controller string) (string, error) {
	h, err := tt.host(host)
	if err != nil {
		return "", err
	}
	d, ok := h.cgroups[controller]
	if !ok {
		return "", fmt.Errorf("host %s has no %s cgroup", host, controller)
	}
	return d, nil
}

func (tt *testTarget) NetNSPath(host string) (string, error) {
	h, err := tt.host(host)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("/proc/%d/ns/net", h.initPID), nil
}

func (tt *testTarget) RootPath(host, path string) (string, error) {
	h, err := tt.host(host)
	if err != nil {
		return "", err
	}
	tt.mu.Lock()
	tt.rootPathCalls++
	call, hook := tt.rootPathCalls, tt.afterRootPath
	tt.mu.Unlock()
	if hook != nil {
		defer hook(call)
	}
	if h.root != "" {
		return filepath.Join(h.root, path), nil
	}
	return filepath.Join(fmt.Sprintf("/proc/%d/root", h.initPID), path), nil
}

func (tt *testTarget) Fact(name string) (string, bool) {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	v, ok := tt.facts[name]
	return v, ok
}

func (tt *testTarget) Facts() map[string]string {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	out := make(map[string]string, len(tt.facts))
	for k, v := range tt.facts {
		out[k] = v
	}
	return out
}

func (tt *testTarget) Mark(key string) (string, bool) {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	v, ok := tt.marks[key]
	return v, ok
}

// pollDeadline bounds every wait for a real condition.
const pollDeadline = 20 * time.Second

// waitFor polls cond until it holds, failing the test at the deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(pollDeadline)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// childPID returns the single child of pid, waiting until it exists.
func childPID(t *testing.T, pid int) int {
	t.Helper()
	var child int
	waitFor(t, fmt.Sprintf("a child of %d", pid), func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		if err != nil {
			return false
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			return false
		}
		child, _ = strconv.Atoi(f[0])
		return true
	})
	return child
}

func comm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

// startHost starts a host: new pid (with its own /proc), mount, uts and
// network namespaces whose PID 1 runs argv (which must end by exec'ing
// sleep). It is ready once PID 1 is sleep. Cleanup kills it and proves
// that no process of its pid namespace is left.
func startHost(t *testing.T, tt *testTarget, name string, argv ...string) *testHost {
	t.Helper()
	if len(argv) == 0 {
		argv = []string{"sleep", "infinity"}
	}
	args := append([]string{"--pid", "--fork", "--mount-proc", "--net", "--mount", "--uts",
		"--propagation", "private", "--"}, argv...)
	cmd := exec.Command("unshare", args...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start host: %v", err)
	}
	initPID := childPID(t, cmd.Process.Pid)
	pidNS, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", initPID))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(initPID, syscall.SIGKILL)
		cmd.Wait()
		// No residue: no process of the host's pid namespace remains.
		waitFor(t, "the host's processes to be gone", func() bool {
			entries, _ := os.ReadDir("/proc")
			for _, e := range entries {
				if ns, err := os.Readlink("/proc/" + e.Name() + "/ns/pid"); err == nil && ns == pidNS {
					return false
				}
			}
			return true
		})
	})
	waitFor(t, "the host's init to run sleep", func() bool { return comm(initPID) == "sleep" })
	h := &testHost{initPID: initPID, cgroups: map[string]string{}}
	tt.mu.Lock()
	tt.hosts[name] = h
	tt.mu.Unlock()
	return h
}

// inHost runs argv inside the host and returns its output, failing the
// test if it fails.
func inHost(t *testing.T, tt *testTarget, host string, argv ...string) string {
	t.Helper()
	cmd, err := tt.Command(context.Background(), host, argv...)
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v in host %s: %v: %s", argv, host, err, out)
	}
	return string(out)
}

// startInHost starts a long-running argv inside the host and returns the
// machine-side PID of the process that runs it (nsenter's child). It is
// killed at cleanup.
func startInHost(t *testing.T, tt *testTarget, host string, env []string, argv ...string) (pid int, stdout *bufio.Reader, stdin io.WriteCloser) {
	t.Helper()
	cmd, err := tt.Command(context.Background(), host, argv...)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid = childPID(t, cmd.Process.Pid)
	t.Cleanup(func() {
		syscall.Kill(pid, syscall.SIGKILL)
		cmd.Wait()
	})
	return pid, bufio.NewReader(out), stdin
}

// startHelper runs one of this binary's helpers inside the host and waits
// for it to say it is ready. Its stdin is returned for helpers that wait
// for a go-ahead.
func startHelper(t *testing.T, tt *testTarget, host, helper string, args ...string) (int, io.WriteCloser) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	pid, out, stdin := startInHost(t, tt, host, []string{envTestHelper + "=" + helper}, append([]string{self}, args...)...)
	line, err := out.ReadString('\n')
	if err != nil && err != io.EOF || strings.TrimSpace(line) != "ready" {
		t.Fatalf("helper %s did not get ready: %q %v", helper, line, err)
	}
	return pid, stdin
}
