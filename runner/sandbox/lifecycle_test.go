//go:build linux

package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestReleaseFromLedgerOnly is gc after a crash of labctl: nothing but the
// ledger is left, and releasing its records in reverse removes everything,
// including processes the learner started.
func TestReleaseFromLedgerOnly(t *testing.T) {
	requireRoot(t)
	spec := testSpec(t)
	l := newLedger(t)
	h, err := Start(context.Background(), spec, l.record)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	kinds := map[string]bool{}
	for _, e := range l.entries {
		kinds[e.Kind] = true
	}
	for _, k := range []string{KindCgroup, KindProcess, KindNetNS} {
		if !kinds[k] {
			t.Errorf("Start recorded no %s (ledger %+v)", k, l.entries)
		}
	}
	// A learner's background process, outside any Command's lifetime.
	run(t, h, "sh", "-c", "sleep 1000 </dev/null >/dev/null 2>&1 &")
	// The ledger goes through JSON, as on disk.
	raw, err := json.Marshal(l.entries)
	if err != nil {
		t.Fatal(err)
	}
	var fromDisk ledger
	if err := json.Unmarshal(raw, &fromDisk.entries); err != nil {
		t.Fatal(err)
	}
	if err := fromDisk.releaseAll(context.Background()); err != nil {
		t.Fatalf("release: %v", err)
	}
	assertGone(t, spec, h)
	if err := fromDisk.releaseAll(context.Background()); err != nil {
		t.Errorf("second release (must be idempotent): %v", err)
	}
	if err := Stop(context.Background(), h); err != nil {
		t.Errorf("Stop after release (must be idempotent): %v", err)
	}
}

// TestStartFailureReleasesEverything: a failure after the init runs (here
// the ledger refusing the netns record) leaves nothing behind.
func TestStartFailureReleasesEverything(t *testing.T) {
	requireRoot(t)
	spec := testSpec(t)
	refuse := errors.New("ledger full")
	var recorded []string
	rec := func(kind, name string, data any) error {
		if kind == KindNetNS {
			return refuse
		}
		recorded = append(recorded, kind)
		return nil
	}
	h, err := Start(context.Background(), spec, rec)
	if !errors.Is(err, refuse) {
		t.Fatalf("Start = %v, %v; want the recorder's error", h, err)
	}
	if !contains(recorded, KindProcess) {
		t.Fatalf("the init was not started before the failure (recorded %v): test proves nothing", recorded)
	}
	assertGone(t, spec, nil)
}

// TestPrepareErrorReleases: a failure while preparing the host's files
// (after its cgroups exist) releases what was created.
func TestPrepareErrorReleases(t *testing.T) {
	requireRoot(t)
	spec := testSpec(t)
	// An upper layer that is a file cannot hold the declared file.
	spec.Files = []File{{Path: "/srv/" + spec.Instance + "/x", Content: []byte("x")}}
	upper := filepath.Join(spec.StateDir, "overlay", "srv", "upper")
	if err := os.MkdirAll(filepath.Dir(upper), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(upper, []byte("not a dir"), 0o644); err != nil {
		t.Fatal(err)
	}
	l := newLedger(t)
	h, err := Start(context.Background(), spec, l.record)
	if err == nil {
		Stop(context.Background(), h)
		t.Fatal("Start succeeded with an unusable overlay")
	}
	if !strings.Contains(err.Error(), "overlay") {
		t.Errorf("error %q does not say what failed", err)
	}
	assertGone(t, spec, nil)
}

// TestInitMountErrorReported drives the init directly with a plan whose
// mount fails inside it, to see the init's own report.
func TestInitMountErrorReported(t *testing.T) {
	requireRoot(t)
	spec := testSpec(t)
	layout, err := DetectLayout()
	if err != nil {
		t.Fatal(err)
	}
	dirs, hs, err := planCgroups(layout, spec.Instance, spec.Name)
	if err != nil {
		t.Fatal(err)
	}
	if err := createCgroups(layout, dirs, spec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		killCgroups(context.Background(), uniqueDirs(dirs))
		removeCgroups(context.Background(), uniqueDirs(dirs))
	})
	missing := filepath.Join(spec.StateDir, "does-not-exist")
	params := initParams{Lab: spec.Lab, Host: spec.Name, Hostname: "x", Layout: layout, Hierarchies: hs,
		Overlays: []overlay{{Target: "/etc", Upper: missing, Work: missing}}}
	_, err = startInit(context.Background(), spec, layout, dirs, params)
	if err == nil || !strings.Contains(err.Error(), "mount private /etc") || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("startInit = %v, want the init's mount error", err)
	}
}

// TestInitSIGTERM: PID 1 ends the host on SIGTERM, taking every process
// of its namespace with it.
func TestInitSIGTERM(t *testing.T) {
	requireRoot(t)
	spec := testSpec(t)
	h, _ := startHost(t, spec)
	run(t, h, "sh", "-c", "sleep 1000 </dev/null >/dev/null 2>&1 &")
	if err := unix.Kill(h.InitPID, unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the host's processes to exit", func() bool {
		pids, err := cgroupPIDs(h.Cgroups[pidsKey(h)])
		return err == nil && len(pids) == 0
	})
	if Alive(h) {
		t.Errorf("init alive after SIGTERM")
	}
}

// TestInitIgnoresStraySignals: SIGINT/SIGHUP to PID 1 (a learner's
// `kill -INT 1`) must not end the host.
func TestInitIgnoresStraySignals(t *testing.T) {
	requireRoot(t)
	h, _ := startHost(t, testSpec(t))
	run(t, h, "kill", "-INT", "1")
	run(t, h, "kill", "-HUP", "1")
	run(t, h, "kill", "-USR1", "1")
	// Still answering proves it survived: a new Command re-checks the
	// init's identity before entering.
	if got := strings.TrimSpace(run(t, h, "cat", "/proc/1/comm")); got != initComm {
		t.Errorf("PID 1 is %q after stray signals", got)
	}
	if !Alive(h) {
		t.Error("init died from a stray signal")
	}
}

func TestCommandExitCodes(t *testing.T) {
	requireRoot(t)
	h, _ := startHost(t, testSpec(t))
	for _, tc := range []struct {
		argv []string
		want int
	}{
		{[]string{"true"}, 0},
		{[]string{"sh", "-c", "exit 7"}, 7},
		{[]string{"sh", "-c", "kill -TERM $$"}, 128 + int(unix.SIGTERM)},
		{[]string{"no-such-command-labctl"}, exitNotFound},
	} {
		err := Command(context.Background(), h, nil, tc.argv...).Run()
		got := 0
		var ee interface{ ExitCode() int }
		if errors.As(err, &ee) {
			got = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("%q: %v", tc.argv, err)
		}
		if got != tc.want {
			t.Errorf("%q exit code = %d, want %d", tc.argv, got, tc.want)
		}
	}
	// The environment is clean plus what the caller passes.
	t.Setenv("LABCTL_TEST_LEAK", "leaked")
	out, err := Command(context.Background(), h, []string{"EXTRA=1"}, "env").Output()
	if err != nil {
		t.Fatal(err)
	}
	env := string(out)
	for _, want := range []string{"PATH=", "HOME=/root\n", "LANG=", "EXTRA=1\n"} {
		if !strings.Contains(env, want) {
			t.Errorf("env inside lacks %q:\n%s", want, env)
		}
	}
	for _, bad := range []string{"LABCTL_TEST_LEAK", "LABCTL_HELPER", enterEnv} {
		if strings.Contains(env, bad) {
			t.Errorf("env inside contains %s:\n%s", bad, env)
		}
	}
	if got, _ := Command(context.Background(), h, nil, "pwd").Output(); string(got) != "/\n" {
		t.Errorf("cwd inside = %q, want /", got)
	}
}

// TestCommandContextCancel: cancelling the context ends the command in the host.
func TestCommandContextCancel(t *testing.T) {
	requireRoot(t)
	h, _ := startHost(t, testSpec(t))
	ctx, cancel := context.WithCancel(context.Background())
	cmd := Command(ctx, h, nil, "sleep", "1000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until sleep runs inside before cancelling.
	waitFor(t, 10*time.Second, "sleep to start in the host", func() bool {
		out, _ := Command(context.Background(), h, nil, "ps", "-e", "-o", "comm=").Output()
		return strings.Contains(string(out), "sleep")
	})
	cancel()
	err := cmd.Wait()
	if err == nil {
		t.Fatal("cancelled command succeeded")
	}
	waitFor(t, 10*time.Second, "sleep to be gone from the host", func() bool {
		out, _ := Command(context.Background(), h, nil, "ps", "-e", "-o", "comm=").Output()
		return !strings.Contains(string(out), "sleep")
	})
}

func TestCommandOnDeadHost(t *testing.T) {
	requireRoot(t)
	spec := testSpec(t)
	h, _ := startHost(t, spec)
	if err := Stop(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	out, err := Command(context.Background(), h, nil, "true").CombinedOutput()
	var ee interface{ ExitCode() int }
	if !errors.As(err, &ee) || ee.ExitCode() != exitEnterFailed || !strings.Contains(string(out), "gone") {
		t.Errorf("Command on a stopped host: %v %q, want exit %d and a message", err, out, exitEnterFailed)
	}
}

func TestTwoHostsOneInstance(t *testing.T) {
	requireRoot(t)
	a := testSpec(t)
	b := a
	b.Name, b.Hostname, b.NetNSName = "db", "db", a.NetNSName[:len(a.NetNSName)-len("app")]+"db"
	b.StateDir = filepath.Join(filepath.Dir(a.StateDir), "db")
	if err := os.MkdirAll(b.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	ha, _ := startHost(t, a)
	hb, _ := startHost(t, b)
	if got := strings.TrimSpace(run(t, hb, "hostname")); got != "db" {
		t.Errorf("second host's hostname = %q", got)
	}
	// Each sees only its own processes and cgroup.
	if ha.InitPID == hb.InitPID {
		t.Fatal("same init")
	}
	if ha.Layout == CgroupV1 {
		run(t, ha, "sh", "-c", "echo 30 > /sys/fs/cgroup/pids/pids.max")
		if got := mustRead(t, filepath.Join(hb.Cgroups["pids"], "pids.max")); got != fmt.Sprintf("%d\n", testPids) {
			t.Errorf("host a changed host b's pids.max to %q", got)
		}
	}
	// Stopping one leaves the other running and the instance cgroup in place.
	if err := Stop(context.Background(), ha); err != nil {
		t.Fatal(err)
	}
	if !Alive(hb) {
		t.Fatal("stopping host a stopped host b")
	}
	if _, err := os.Stat(filepath.Dir(hb.Cgroups[pidsKey(hb)])); err != nil {
		t.Errorf("instance cgroup removed while host b runs: %v", err)
	}
	run(t, hb, "true")
}
