package runner

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/labctl/labctl/internal/hostsnap"
	"github.com/labctl/labctl/labs"
)

// crashLab is the three-host lab with a fault, so a crash can land in
// every phase: address block, hosts, links, routes, forwarding, faults.
func crashLab() *labs.Lab {
	return parseLabYAML("crash", threeHostYAML+`faults:
  - id: note
    kind: test.file
    host: server
    with: {path: /note, content: '{{ fact "server.addr" }}'}
`)
}

// startCrashHelper re-executes the test binary as a labctl process that
// runs Up; killAt > 0 makes it SIGKILL itself after that ledger record.
func startCrashHelper(t *testing.T, killAt int) *exec.Cmd {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), envHelperUp+"=crash", envKillAt+"="+strconv.Itoa(killAt))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
}

// recoverAndCheck is what a user does after a crash: gc, then down what
// did come up; the machine must then be as it was.
func recoverAndCheck(t *testing.T, before *hostsnap.Snapshot, point string) {
	t.Helper()
	// A process the crashed one was forking may hold the instance lock
	// for a moment (until it execs or dies); gc skips a locked instance,
	// so run it until nothing half-built is left, up to a deadline.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := GC(context.Background()); err != nil {
			t.Fatalf("%s: gc: %v", point, err)
		}
		all, err := List()
		if err != nil {
			t.Fatal(err)
		}
		if n := notReady(all); n == "" {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("%s: gc left instance %s", point, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	all, _ := List()
	for _, in := range all {
		if err := in.Down(context.Background()); err != nil {
			t.Fatalf("%s: down %s: %v", point, in.ID, err)
		}
	}
	requireNoInstances(t)
	// Killed inits are orphans the machine's init reaps on its own
	// schedule; wait for the machine to settle, up to a deadline.
	keep := ownEntries()
	want := hostsnap.Filter(before, keep)
	for {
		d := hostsnap.Diff(want, hostsnap.Filter(snapshot(t), keep))
		if d == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the machine changed (-before +after):\n%s", point, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func notReady(all []*Instance) string {
	for _, in := range all {
		if in.Phase != PhaseReady {
			return in.ID + " in phase " + in.Phase
		}
	}
	return ""
}

func TestCrashDuringUpIsRecoveredByGC(t *testing.T) {
	requireRoot(t)
	privateStateRoot(t)
	before := snapshot(t)

	// A clean run tells how many records an up writes and how long it takes.
	start := time.Now()
	clean := startCrashHelper(t, 0)
	if err := clean.Wait(); err != nil {
		t.Fatalf("helper up without a crash: %v", err)
	}
	upTime := time.Since(start)
	all, err := List()
	if err != nil || len(all) != 1 {
		t.Fatalf("after a clean helper run: %v instances, %v", all, err)
	}
	recs, err := readLedger(filepath.Join(all[0].Dir, ledgerFile))
	if err != nil {
		t.Fatal(err)
	}
	records := len(recs)
	t.Logf("a clean up writes %d ledger records in %v", records, upTime)
	recoverAndCheck(t, before, "clean run")

	points := 0
	for k := 1; k <= records; k++ {
		helper := startCrashHelper(t, k)
		err := helper.Wait()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("helper killed after record %d ended with %v, want SIGKILL", k, err)
		}
		t.Logf("crash after ledger record %d/%d", k, records)
		recoverAndCheck(t, before, "crash after record "+strconv.Itoa(k))
		points++
	}
	for points < 60 {
		delay := time.Duration(rand.Int64N(int64(upTime)))
		helper := startCrashHelper(t, 0)
		time.Sleep(delay) // the crash point itself, not a wait for readiness
		_ = helper.Process.Kill()
		_ = helper.Wait()
		t.Logf("crash %v after start", delay)
		recoverAndCheck(t, before, "crash after "+delay.String())
		points++
	}
}
