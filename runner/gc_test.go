package runner

import (
	"context"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/labctl/labctl/runner/sandbox"
)

// killInits kills every host's PID 1 and waits until none is alive.
func killInits(t *testing.T, in *Instance) {
	t.Helper()
	for _, h := range in.Hosts {
		if err := syscall.Kill(h.InitPID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, h := range in.Hosts {
		for sandbox.Alive(h) {
			if time.Now().After(deadline) {
				t.Fatalf("init of %s still alive after SIGKILL", h.Name)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

func TestGCRemovesAReadyInstanceWhoseHostsDied(t *testing.T) {
	requireRoot(t)
	privateStateRoot(t)
	before := snapshot(t)
	dead := up(t, threeHostLab(), UpOptions{})
	alive := up(t, oneHostLab(), UpOptions{})
	killInits(t, dead)

	rep, err := GC(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rep.Instances, []string{dead.ID}) {
		t.Errorf("gc removed %v, want only the dead %s", rep.Instances, dead.ID)
	}
	if got, err := Open(""); err != nil || got.ID != alive.ID {
		t.Fatalf("after gc, Open(\"\") = %v, %v; want the live %s", got, err, alive.ID)
	}
	down(t, alive)
	requireNoInstances(t)
	requireNoResidue(t, before)
}

func TestGCSweepsResourcesWithoutALedger(t *testing.T) {
	requireRoot(t)
	root := privateStateRoot(t)
	before := snapshot(t)
	in := up(t, threeHostLab(), UpOptions{})
	// The state directory is lost (say, someone removed it): only the
	// names tell what the resources belong to.
	killInits(t, in)
	unmountUnder(in.Dir)
	if err := os.RemoveAll(in.Dir); err != nil {
		t.Fatal(err)
	}
	rep, err := GC(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	swept := strings.Join(rep.Swept, "\n")
	for _, want := range []string{"netns labctl-" + in.ID + "-router", "cgroup /sys/fs/cgroup/memory/labctl/" + in.ID} {
		if !strings.Contains(swept, want) {
			t.Errorf("gc swept:\n%s\nwant %q among them", swept, want)
		}
	}
	if _, err := os.Stat(root + "/" + in.ID); !os.IsNotExist(err) {
		t.Errorf("gc recreated the lost instance directory: %v", err)
	}
	requireNoResidue(t, before)
}

func TestGCLeavesOtherStateRootsAlone(t *testing.T) {
	requireRoot(t)
	privateStateRoot(t)
	in := up(t, oneHostLab(), UpOptions{})
	// Another state root (another user of labctl, another test) runs gc.
	t.Setenv(EnvStateDir, t.TempDir())
	rep, err := GC(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range rep.Swept {
		if strings.Contains(s, in.ID) {
			t.Errorf("gc of another state root swept %s", s)
		}
	}
	t.Setenv(EnvStateDir, strings.TrimSuffix(in.Dir, "/"+in.ID))
	if got := strings.TrimSpace(run(t, in, "app", "hostname")); got != "app" {
		t.Errorf("after a foreign gc the host says %q", got)
	}
	down(t, in)
}
