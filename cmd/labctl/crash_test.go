package main

import (
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/labctl/labctl/internal/crashgc"
	"github.com/labctl/labctl/internal/hostsnap"
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
	upTime, err := crashgc.MeasureUp(bin, lab, "ts-crash-measure")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("a full up takes %s here; killing at random points within it", upTime)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	// A delay drawn near the end of up may land after it finished; such a
	// run is still checked, but only kills that interrupted up count.
	interrupted := 0
	for i := 0; interrupted < kills; i++ {
		if i == 4*kills {
			t.Fatalf("only %d of %d attempts interrupted up; up got faster than measured", interrupted, i)
		}
		delay := time.Duration(rng.Int64N(int64(upTime) + 1))
		finished, err := crashgc.KillUpThenGC(bin, lab, "ts-crash", delay, before)
		if !finished {
			interrupted++
		}
		t.Logf("kill %2d at %8s: up %s", i+1, delay, map[bool]string{true: "had finished", false: "was killed"}[finished])
		if err != nil {
			t.Fatalf("kill %d at %s: %v (replay: bin/labbench soak --replay %s@%s)", i+1, delay, err, lab, delay)
		}
	}
}
