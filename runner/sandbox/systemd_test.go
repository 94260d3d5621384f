//go:build linux

package sandbox

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/labctl/labctl/internal/hostsnap"
	"github.com/labctl/labctl/internal/rootfs"
)

// requireSystemd skips when the machine cannot boot systemd hosts; on CI
// (root, systemd-container and debootstrap installed) it builds the root
// filesystem if needed and runs.
func requireSystemd(t testing.TB) {
	t.Helper()
	requireRoot(t)
	if _, err := exec.LookPath("systemd-nspawn"); err != nil {
		t.Skip("needs systemd-nspawn (apt-get install systemd-container debootstrap)")
	}
	if _, err := rootfs.Ensure(context.Background(), os.Stderr); err != nil {
		t.Fatalf("root filesystem: %v", err)
	}
}

func systemdSpec(t testing.TB) Spec {
	spec := testSpec(t)
	spec.Init = InitSystemd
	spec.Memory = 512 << 20
	spec.Pids = 512
	return spec
}

func hostOutput(t testing.TB, h *Host, argv ...string) string {
	t.Helper()
	out, err := Command(context.Background(), h, nil, argv...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v in host: %v: %s", argv, err, out)
	}
	return strings.TrimSpace(string(out))
}

// assertSystemdGone checks what a systemd host leaves when it is gone.
func assertSystemdGone(t *testing.T, spec Spec, h *Host) {
	t.Helper()
	for _, d := range uniqueDirs(h.Cgroups) {
		if _, err := os.Lstat(d); err == nil {
			t.Errorf("cgroup %s is still there", d)
		}
	}
	if _, err := os.Lstat(h.NetNS); err == nil {
		t.Errorf("netns %s is still there", h.NetNS)
	}
	if _, err := os.Lstat(filepath.Join(nspawnRunDir, "propagate", spec.NetNSName)); err == nil {
		t.Errorf("nspawn leftover %s/propagate/%s is still there", nspawnRunDir, spec.NetNSName)
	}
	if locks, _ := os.ReadDir(filepath.Join(nspawnRunDir, "locks")); len(locks) > 0 && !nspawnRuns() {
		t.Errorf("nspawn lock files left with no nspawn running: %v", locks)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		data, _ := os.ReadFile(p)
		if strings.Contains(string(data), "--machine="+spec.NetNSName) {
			t.Errorf("nspawn of %s still runs: %s", spec.NetNSName, p)
		}
	}
}

func TestSystemdHostBootsAndStops(t *testing.T) {
	requireSystemd(t)
	before, err := hostsnap.Take()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// Two at once: each has its own cgroup, netns and machine name.
	specs := []Spec{systemdSpec(t), systemdSpec(t)}
	hosts := make([]*Host, len(specs))
	ledgers := make([]*ledger, len(specs))
	errs := make([]error, len(specs))
	var wg sync.WaitGroup
	for i := range specs {
		ledgers[i] = newLedger(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			hosts[i], errs[i] = Start(ctx, specs[i], ledgers[i].record)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Start %d: %v", i, err)
		}
	}
	for i, h := range hosts {
		spec := specs[i]
		if got := hostOutput(t, h, "cat", "/proc/1/comm"); got != "systemd" {
			t.Errorf("PID 1 of host %d is %q, want systemd", i, got)
		}
		if got := hostOutput(t, h, "hostname"); got != spec.Hostname {
			t.Errorf("hostname = %q, want %q", got, spec.Hostname)
		}
		state := hostOutput(t, h, "systemctl", "is-system-running")
		if state != "running" && state != "degraded" {
			t.Errorf("is-system-running = %q", state)
		}
		if got := hostOutput(t, h, "cat", "/etc/labctl-"+spec.Instance+".conf"); got != "secret=no" {
			t.Errorf("declared file = %q", got)
		}
		if got := hostOutput(t, h, "cat", "/etc/resolv.conf"); !strings.Contains(got, "192.0.2.53") {
			t.Errorf("resolv.conf = %q", got)
		}
		// The labctl binary is there for lab units, read-only.
		if out, err := Command(ctx, h, nil, "test", "-x", LabctlInHost).CombinedOutput(); err != nil {
			t.Errorf("%s is not executable in the host: %v %s", LabctlInHost, err, out)
		}
		if out, err := Command(ctx, h, nil, "touch", LabctlInHost).CombinedOutput(); err == nil {
			t.Errorf("the host can write the labctl binary: %s", out)
		}
		// The host's netns is the named one the runner wires links into.
		if got, want := nsInode(t, "/proc/"+itoa(h.InitPID)+"/ns/net"), nsInode(t, h.NetNS); got != want {
			t.Errorf("leader netns %d, named netns %d: not the same", got, want)
		}
	}
	// Files written in one host's overlay are not in the other's nor in
	// the cached root filesystem.
	hostOutput(t, hosts[0], "touch", "/etc/only-in-0")
	if out, err := Command(ctx, hosts[1], nil, "test", "-e", "/etc/only-in-0").CombinedOutput(); err == nil {
		t.Errorf("a file made in host 0 shows in host 1: %s", out)
	}
	if _, err := os.Stat(filepath.Join(rootfs.Dir(), "etc/only-in-0")); err == nil {
		t.Errorf("a file made in a host reached the cached root filesystem")
	}
	for i, h := range hosts {
		if err := Stop(ctx, h); err != nil {
			t.Errorf("Stop %d: %v", i, err)
		}
		if err := ledgers[i].releaseAll(ctx); err != nil {
			t.Errorf("release after Stop (must be idempotent): %v", err)
		}
		assertSystemdGone(t, specs[i], h)
	}
	after, err := hostsnap.Take()
	if err != nil {
		t.Fatal(err)
	}
	if d := hostsnap.Diff(before, after); d != "" {
		t.Errorf("machine changed (-before +after):\n%s", d)
	}
}

// TestSystemdHostReleaseAfterCrash: labctl died (nothing but the ledger),
// nspawn was SIGKILLed (the container lives on without it): releasing the
// records alone removes everything.
func TestSystemdHostReleaseAfterCrash(t *testing.T) {
	requireSystemd(t)
	before, err := hostsnap.Take()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	spec := systemdSpec(t)
	l := newLedger(t)
	h, err := Start(ctx, spec, l.record)
	if err != nil {
		t.Fatal(err)
	}
	if err := killPID(parentPID(h.InitPID)); err != nil {
		t.Fatal(err)
	}
	if !Alive(h) {
		t.Fatal("the container died with nspawn: this test no longer covers a lingering container")
	}
	if err := l.releaseAll(ctx); err != nil {
		t.Fatalf("release: %v", err)
	}
	assertSystemdGone(t, spec, h)
	if Alive(h) {
		t.Errorf("the container's PID 1 survived release")
	}
	after, err := hostsnap.Take()
	if err != nil {
		t.Fatal(err)
	}
	if d := hostsnap.Diff(before, after); d != "" {
		t.Errorf("machine changed (-before +after):\n%s", d)
	}
}

// BenchmarkSystemdHostReady measures Start (boot until systemd says running
// or degraded) of a systemd host; Stop is outside the timer.
func BenchmarkSystemdHostReady(b *testing.B) {
	requireSystemd(b)
	ctx := context.Background()
	var times []time.Duration
	for b.Loop() {
		b.StopTimer()
		spec := systemdSpec(b)
		l := newLedger(b)
		b.StartTimer()
		start := time.Now()
		h, err := Start(ctx, spec, l.record)
		times = append(times, time.Since(start))
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		if err := Stop(ctx, h); err != nil {
			b.Fatal(err)
		}
		_ = l.releaseAll(ctx)
		b.StartTimer()
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	b.ReportMetric(float64(times[len(times)/2].Milliseconds()), "median-ms")
}

func nsInode(t testing.TB, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return st.Ino
}

func itoa(n int) string { return strconv.Itoa(n) }

func killPID(pid int) error {
	if pid <= 1 {
		return fmt.Errorf("no such nspawn (pid %d)", pid)
	}
	return unix.Kill(pid, unix.SIGKILL)
}

// nspawnRuns reports whether any systemd-nspawn runs (other labs may).
func nspawnRuns() bool {
	comms, _ := filepath.Glob("/proc/[0-9]*/comm")
	for _, c := range comms {
		if data, _ := os.ReadFile(c); strings.TrimSpace(string(data)) == "systemd-nspawn" {
			return true
		}
	}
	return false
}
