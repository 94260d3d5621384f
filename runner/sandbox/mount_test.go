//go:build linux

package sandbox

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMounts: a 16Mi tmpfs given in the spec and a 32Mi ext4 with 512
// inodes added to the running host are seen inside only, fill up for
// real, and leave nothing behind.
func TestMounts(t *testing.T) {
	requireRoot(t)
	spec := testSpec(t)
	spec.Mounts = []Mount{{Path: "/srv/scratch", Type: "tmpfs", Size: 16 << 20}}
	l := newLedger(t)
	ctx := context.Background()
	h, err := Start(ctx, spec, l.record)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			Stop(ctx, h)
			l.releaseAll(ctx)
		}
	})
	if err := AddMount(ctx, h, spec.StateDir, Mount{Path: "/var/lib/app", Type: "ext4", Size: 32 << 20, Inodes: 512}, l.record); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(spec.StateDir, "disk-0.img")
	if len(loopDevicesOf(img)) != 1 {
		t.Fatalf("want one loop device backed by %s, got %v", img, loopDevicesOf(img))
	}

	df := run(t, h, "df", "-h", "/srv/scratch", "/var/lib/app")
	if !strings.Contains(grepLines(df, "/srv/scratch"), "16M") || !strings.Contains(grepLines(df, "/var/lib/app"), "/dev/loop") {
		t.Errorf("df -h inside:\n%s", df)
	}
	dfi := run(t, h, "df", "-i", "/var/lib/app")
	if f := strings.Fields(grepLines(dfi, "/var/lib/app")); len(f) < 2 || f[1] != "512" {
		t.Errorf("df -i inside, want 512 inodes:\n%s", dfi)
	}
	mi := mustRead(t, "/proc/self/mountinfo")
	for _, p := range []string{" /srv/scratch ", " /var/lib/app ", filepath.Base(loopDevicesOf(img)[0]) + " "} {
		if grepLines(mi, p) != "" {
			t.Errorf("the machine's mount table shows %s:\n%s", p, grepLines(mi, p))
		}
	}
	for _, p := range []string{"/srv/scratch", "/var/lib/app"} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s appeared on the machine (%v)", p, err)
		}
	}

	// Full writes fail with ENOSPC, from the kernel.
	for _, dir := range []string{"/srv/scratch", "/var/lib/app"} {
		out, err := Command(ctx, h, nil, "dd", "if=/dev/zero", "of="+dir+"/fill", "bs=1M").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "No space left on device") {
			t.Errorf("filling %s: %v\n%s", dir, err, out)
		}
	}
	// Out of inodes, with space left.
	run(t, h, "rm", "/var/lib/app/fill")
	out, err := Command(ctx, h, nil, "sh", "-c", "cd /var/lib/app && i=0; while touch f$i; do i=$((i+1)); done").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "No space left on device") {
		t.Errorf("creating files until the inodes run out: %v\n%s", err, out)
	}

	if err := Stop(ctx, h); err != nil {
		t.Fatal(err)
	}
	if err := l.releaseAll(ctx); err != nil {
		t.Fatal(err)
	}
	stopped = true
	assertGone(t, spec, h)
	waitFor(t, 10*time.Second, "the loop device to be detached", func() bool { return len(loopDevicesOf(img)) == 0 })
	if _, err := os.Lstat(img); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("image %s remains (%v)", img, err)
	}
	// Releasing again is success.
	if err := l.releaseAll(ctx); err != nil {
		t.Errorf("second release: %v", err)
	}
}

// TestMountRefusesSharedDirs: a mount point that would have to be created
// in a directory shared with the machine is refused; bad specs create nothing.
func TestMountRefusesSharedDirs(t *testing.T) {
	requireRoot(t)
	spec := testSpec(t)
	h, _ := startHost(t, spec)
	err := AddMount(context.Background(), h, spec.StateDir, Mount{Path: "/labctl-nope-" + spec.Instance, Type: "tmpfs", Size: 1 << 20}, nil)
	if err == nil || !strings.Contains(err.Error(), "shared with the machine") {
		t.Errorf("mount under / = %v, want a refusal", err)
	}
	if _, err := os.Stat("/labctl-nope-" + spec.Instance); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("created a directory on the machine")
	}
	for _, m := range []Mount{{Path: "rel", Type: "tmpfs", Size: 1}, {Path: "/srv/x", Type: "xfs", Size: 1}, {Path: "/srv/x", Type: "tmpfs"}, {Path: "/proc/x", Type: "tmpfs", Size: 1}} {
		if err := AddMount(context.Background(), h, spec.StateDir, m, nil); err == nil {
			t.Errorf("AddMount(%+v) succeeded", m)
		}
	}
}
