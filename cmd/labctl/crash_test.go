package main

import (
	"bytes"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/labctl/labctl/internal/hostsnap"
	"github.com/labctl/labctl/runner"
)

// TestKillUpThenGC SIGKILLs the real `labctl up` at random points while it
// builds a lab, runs `labctl gc`, and requires the machine to be
// exactly as before — each kill point is logged so a failure can be replayed.
func TestKillUpThenGC(t *testing.T) {
	kills := 50
	if testing.Short() {
		kills = 10
	}
	killUpThenGC(t, "first-look", kills)
}

// TestKillUpThenGCHeavyHosts does the same for labs whose hosts hold more
// than namespaces: a booted systemd, a frozen filesystem, a FUSE mount.
func TestKillUpThenGCHeavyHosts(t *testing.T) {
	for _, lab := range []string{"exec-not-found", "kill-does-nothing", "reads-hang"} {
		t.Run(lab, func(t *testing.T) { killUpThenGC(t, lab, 4) })
	}
}

func killUpThenGC(t *testing.T, lab string, kills int) {
	if os.Geteuid() != 0 {
		t.Skip("labs need root (namespaces, cgroups)")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// A copy named labctl: the test binary runs the CLI under that name.
	bin := filepath.Join(t.TempDir(), "labctl")
	if err := os.Link(self, bin); err != nil {
		copyFile(t, bin)
	}
	before, err := hostsnap.Take()
	if err != nil {
		t.Fatal(err)
	}
	// A failed kill point must not leave its residue to the next test,
	// whose own before-snapshot would then hide or misreport it.
	t.Cleanup(func() {
		_ = exec.Command(bin, "down", "ts-crash").Run()
		_ = exec.Command(bin, "gc").Run()
	})
	upTime := measureUp(t, bin, lab)
	t.Logf("a full up takes %s here; killing at random points within it", upTime)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	for i := 0; i < kills; i++ {
		delay := time.Duration(rng.Int64N(int64(upTime) + 1))
		name := "ts-crash"
		cmd := exec.Command(bin, "up", "--name", name, lab)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		timer := time.AfterFunc(delay, func() { _ = cmd.Process.Kill() })
		err := cmd.Wait()
		timer.Stop()
		t.Logf("kill %2d at %8s: up %s", i+1, delay, map[bool]string{true: "had finished", false: "was killed"}[err == nil])
		if out, err := exec.Command(bin, "gc").CombinedOutput(); err != nil {
			t.Fatalf("kill %d at %s: gc: %v\n%s", i+1, delay, err, out)
		}
		// Killed after the instance became ready (or not killed at all): it
		// is a live lab, which gc rightly keeps; down removes it.
		if in, err := runner.Open(name); err == nil && in.Phase == runner.PhaseReady {
			if out, err := exec.Command(bin, "down", name).CombinedOutput(); err != nil {
				t.Fatalf("kill %d at %s: down of the ready instance: %v\n%s", i+1, delay, err, out)
			}
		}
		diff, err := runner.SettledDiff(before)
		if err != nil {
			t.Fatal(err)
		}
		if diff != "" {
			t.Fatalf("kill %d at %s: the machine changed after gc (-before +after):\n%s", i+1, delay, diff)
		}
	}
}

// measureUp times one complete up (and removes the lab again).
func measureUp(t *testing.T, bin, lab string) time.Duration {
	start := time.Now()
	if out, err := exec.Command(bin, "up", "--name", "ts-crash-measure", lab).CombinedOutput(); err != nil {
		t.Fatalf("up: %v\n%s", err, out)
	}
	d := time.Since(start)
	if out, err := exec.Command(bin, "down", "ts-crash-measure").CombinedOutput(); err != nil {
		t.Fatalf("down: %v\n%s", err, out)
	}
	return d
}
