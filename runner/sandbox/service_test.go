//go:build linux

package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl/internal/reexec"
)

const (
	helperTestWorker  = "sandbox-test-worker"
	helperTestStarter = "sandbox-test-starter"
	helperTestArgs    = "sandbox-test-args"
)

func init() {
	reexec.Register(helperTestWorker, runTestWorker)
	reexec.Register(helperTestStarter, runTestStarter)
	reexec.Register(helperTestArgs, runTestArgs)
}

type workerParams struct {
	Token string `json:"token"`
}

// runTestWorker plays a service: it names itself, proves its params
// arrived by writing them inside the host, and runs until killed.
func runTestWorker() int {
	_ = reexec.SetComm("worker")
	var p workerParams
	if err := reexec.Params(&p); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := os.WriteFile("/tmp/worker-params", []byte(p.Token), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for {
		time.Sleep(time.Hour) // a service idles until the host stops
	}
}

// starterParams is what the starter needs to launch a worker.
type starterParams struct {
	Host  Host   `json:"host"`
	Token string `json:"token"`
}

// runTestStarter plays `labctl up`: it starts the worker as a service and
// exits at once, without waiting for its launcher.
func runTestStarter() int {
	var p starterParams
	if err := reexec.Params(&p); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	params, err := os.CreateTemp("", "params")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	os.Remove(params.Name())
	if err := json.NewEncoder(params).Encode(workerParams{Token: p.Token}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	params.Seek(0, 0)
	cmd := CommandWith(context.Background(), &p.Host, CommandSpec{
		Path:       reexec.Self(),
		Argv:       []string{"worker", "--config", "/etc/worker.conf"},
		Env:        []string{reexec.EnvHelper + "=" + helperTestWorker},
		ExtraFiles: []*os.File{params},
		Service:    true,
	})
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// runTestArgs prints what it was started as: argv, comm and fds 3, 4.
func runTestArgs() int {
	comm, _ := os.ReadFile("/proc/self/comm")
	fmt.Printf("argv=%q comm=%s", os.Args, comm)
	for _, fd := range []int{3, 4} {
		data, err := os.ReadFile(fmt.Sprintf("/proc/self/fd/%d", fd))
		fmt.Printf("fd%d=%q err=%v\n", fd, data, err)
	}
	return 0
}

// TestCommandByDescriptor: an executable the host cannot see (this test
// binary, under the machine's /tmp) runs inside it with its own argv[0],
// and extra files arrive as fds 3.. in order.
func TestCommandByDescriptor(t *testing.T) {
	requireRoot(t)
	h, _ := startHost(t, testSpec(t))
	self := reexec.Self()
	if err := Command(context.Background(), h, nil, "test", "-e", self).Run(); err == nil {
		t.Logf("%s is visible inside the host; the test proves less", self)
	}
	three, four := tempFileWith(t, "three"), tempFileWith(t, "four")
	cmd := CommandWith(context.Background(), h, CommandSpec{
		Path:       self,
		Argv:       []string{"probe-name", "a b", "c"},
		Env:        []string{reexec.EnvHelper + "=" + helperTestArgs},
		ExtraFiles: []*os.File{three, four},
	})
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{`argv=["probe-name" "a b" "c"]`, `fd3="three" err=<nil>`, `fd4="four" err=<nil>`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %s:\n%s", want, out)
		}
	}
	// Files given to Command's cmd afterwards are forwarded too.
	cmd = Command(context.Background(), h, nil, "sh", "-c", "cat <&3; cat <&4")
	cmd.ExtraFiles = []*os.File{tempFileWith(t, "x3\n"), tempFileWith(t, "x4\n")}
	if out, err := cmd.CombinedOutput(); err != nil || string(out) != "x3\nx4\n" {
		t.Errorf("fds 3 and 4 through Command: %q, %v", out, err)
	}
}

func tempFileWith(t *testing.T, content string) *os.File {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "fd")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(content); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(0, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestService: a service started by a process that exits at once keeps
// running inside the host, as a child of the host's init, named as the
// service, with its params; it is gone after Stop.
func TestService(t *testing.T) {
	requireRoot(t)
	spec := testSpec(t)
	h, _ := startHost(t, spec)
	token := "tok-" + randomID(t)

	starter, send, err := reexec.Command(helperTestStarter, "starter", nil, starterParams{Host: *h, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	starter.Stderr = &stderr
	if err := starter.Start(); err != nil {
		t.Fatal(err)
	}
	if err := send(); err != nil {
		t.Fatal(err)
	}
	if err := starter.Wait(); err != nil {
		t.Fatalf("starter: %v\n%s", err, stderr.String())
	}

	// Inside: ps shows the service by its name and args, adopted by PID 1.
	var line string
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := Command(context.Background(), h, nil, "ps", "-e", "-o", "pid=,ppid=,stat=,comm=,args=").CombinedOutput()
			params, err := Command(context.Background(), h, nil, "cat", "/tmp/worker-params").CombinedOutput()
			t.Logf("ps inside:\n%s\nparams: %q %v\nstarter: %s", out, params, err, stderr.String())
		}
	})
	waitFor(t, 10*time.Second, "the worker to run in the host with its params", func() bool {
		out, _ := Command(context.Background(), h, nil, "ps", "-e", "-o", "pid=,ppid=,stat=,comm=,args=").Output()
		line = grepLines(string(out), "--config")
		params, _ := Command(context.Background(), h, nil, "cat", "/tmp/worker-params").Output()
		// comm is the binary's fd number until the worker sets it.
		f := strings.Fields(line)
		return len(f) > 3 && f[3] == "worker" && string(params) == token
	})
	f := strings.Fields(line)
	if len(f) < 7 || f[1] != "1" || f[3] != "worker" || strings.Join(f[4:], " ") != "worker --config /etc/worker.conf" || strings.HasPrefix(f[2], "Z") {
		t.Fatalf("ps inside: %q, want ppid 1, comm worker, args `worker --config /etc/worker.conf`", line)
	}

	// From the machine: the same process, by its PID there.
	pid := servicePID(t, h, "worker")
	if got := mustRead(t, fmt.Sprintf("/proc/%d/cmdline", pid)); got != "worker\x00--config\x00/etc/worker.conf\x00" {
		t.Errorf("cmdline = %q", got)
	}
	if got := mustRead(t, fmt.Sprintf("/proc/%d/comm", pid)); got != "worker\n" {
		t.Errorf("comm = %q", got)
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil || exe != reexec.Self() {
		t.Errorf("exe = %q (%v), want %s", exe, err, reexec.Self())
	}
	rel := ":" + filepath.Join("/", cgroupParent, spec.Instance, spec.Name) + "\n"
	if cg := mustRead(t, fmt.Sprintf("/proc/%d/cgroup", pid)); !strings.Contains(cg, rel) {
		t.Errorf("worker's cgroups do not include %s:\n%s", rel, cg)
	}
	if got, want := nsLink(t, pid, "pid"), nsLink(t, h.InitPID, "pid"); got != want {
		t.Errorf("worker pid namespace %s, init's %s", got, want)
	}
	if got, want := nsLink(t, pid, "mnt"), nsLink(t, h.InitPID, "mnt"); got != want {
		t.Errorf("worker mount namespace %s, init's %s", got, want)
	}
	// Its fds: stdio, the runtime's own, and nothing of the launch (no
	// params file left open, no pipe). Fds this test inherited itself
	// without close-on-exec (from whatever ran it) pass through everything.
	for _, fd := range listFDs(t, pid) {
		if strings.HasPrefix(fd, "/tmp/") || (strings.HasPrefix(fd, "pipe:") && !contains(listFDs(t, os.Getpid()), fd)) {
			t.Errorf("worker holds %s", fd)
		}
	}

	// StartService reports the machine-side PID.
	params := tempFileWith(t, `{"token":"second"}`)
	pid2, err := StartService(context.Background(), h, CommandSpec{
		Path:       reexec.Self(),
		Argv:       []string{"worker2", "--second"},
		Env:        []string{reexec.EnvHelper + "=" + helperTestWorker},
		ExtraFiles: []*os.File{params},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, fmt.Sprintf("/proc/%d/cmdline", pid2)); got != "worker2\x00--second\x00" {
		t.Errorf("StartService pid %d has cmdline %q", pid2, got)
	}

	if err := Stop(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	for _, p := range []int{pid, pid2} {
		waitFor(t, 10*time.Second, "the services to be gone after Stop", func() bool {
			_, err := os.Stat(fmt.Sprintf("/proc/%d", p))
			return errors.Is(err, os.ErrNotExist)
		})
	}
}

// TestServiceNotFound: a service whose executable does not exist fails
// the launch with a clear exit code.
func TestServiceNotFound(t *testing.T) {
	requireRoot(t)
	h, _ := startHost(t, testSpec(t))
	_, err := StartService(context.Background(), h, CommandSpec{Argv: []string{"no-such-service-labctl"}})
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitNotFound {
		t.Errorf("StartService of a missing command: %v, want exit %d", err, exitNotFound)
	}
}

// servicePID finds the machine-side PID of the host's process named comm.
func servicePID(t *testing.T, h *Host, comm string) int {
	t.Helper()
	want := nsLink(t, h.InitPID, "pid")
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		c, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil || strings.TrimSpace(string(c)) != comm {
			continue
		}
		if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid)); err == nil && ns == want {
			return pid
		}
	}
	t.Fatalf("no process %s in the host", comm)
	return 0
}

// listFDs returns what pid's open fds point to.
func listFDs(t *testing.T, pid int) []string {
	t.Helper()
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); err == nil {
			out = append(out, l)
		}
	}
	return out
}

func nsLink(t *testing.T, pid int, ns string) string {
	t.Helper()
	l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, ns))
	if err != nil {
		t.Fatal(err)
	}
	return l
}
