//go:build linux

package sandbox

import (
	"context"
	"os"
	"testing"
)

// TestNetnsDirLastUserRemovesIt: the first lab makes /run/netns (and its
// bind mount), a second one uses it, the first leaves first. The second
// must then remove what the first made, or it stays on the machine.
func TestNetnsDirLastUserRemovesIt(t *testing.T) {
	requireRoot(t)
	state := func() (exists, mounted bool) {
		_, err := os.Stat(netnsDir)
		mounted, _ = isMountpoint(netnsDir)
		return err == nil, mounted
	}
	existed, wasMounted := state()
	if wasMounted {
		t.Logf("%s is already a mount here: this run checks only that it is left alone", netnsDir)
	}
	ctx := context.Background()
	var ledgers [2]*ledger
	for i := range ledgers {
		ledgers[i] = newLedger(t)
		h, err := Start(ctx, testSpec(t), ledgers[i].record)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { Stop(ctx, h) })
	}
	if exists, mounted := state(); !exists || !mounted {
		t.Fatalf("with two hosts up, %s exists=%v mounted=%v", netnsDir, exists, mounted)
	}
	for _, l := range ledgers { // the maker first
		if err := l.releaseAll(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if exists, mounted := state(); exists != existed || mounted != wasMounted {
		t.Errorf("after both left, %s exists=%v mounted=%v; before exists=%v mounted=%v", netnsDir, exists, mounted, existed, wasMounted)
	}
}
