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
// builds the default lab, runs `labctl gc`, and requires the machine to be
// exactly as before — each kill point is logged so a failure can be replayed.
func TestKillUpThenGC(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("labs need root (namespaces, cgroups)")
	}
	kills := 50
	if testing.Short() {
		kills = 10
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
	upTime := measureUp(t, bin)
	t.Logf("a full up takes %s here; killing at random points within it", upTime)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	for i := 0; i < kills; i++ {
		delay := time.Duration(rng.Int64N(int64(upTime) + 1))
		name := "ts-crash"
		cmd := exec.Command(bin, "up", "--name", name, "first-look")
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
func measureUp(t *testing.T, bin string) time.Duration {
	start := time.Now()
	if out, err := exec.Command(bin, "up", "--name", "ts-crash-measure", "first-look").CombinedOutput(); err != nil {
		t.Fatalf("up: %v\n%s", err, out)
	}
	d := time.Since(start)
	if out, err := exec.Command(bin, "down", "ts-crash-measure").CombinedOutput(); err != nil {
		t.Fatalf("down: %v\n%s", err, out)
	}
	return d
}
