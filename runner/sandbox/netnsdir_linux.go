//go:build linux

package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// /run/netns is shared by every instance and by `ip netns`. Whoever uses
// it records it (a dir and a mount record in its ledger), and the last user
// out removes what labctl made of it: the first instance may well leave
// before the others, and a later one must not leave the directory or the
// bind mount behind. What labctl made is marked on the directory itself
// (an xattr, so the marker goes with the directory and shows in no
// listing); what somebody else made (`ip netns add` before any lab) is
// never removed.
const netnsMadeAttr = "trusted.labctl.made"

// ensureNetnsDir makes /run/netns a shared mount of its own, as
// `ip netns add` does, so named namespaces are seen by mount namespaces
// made later. It returns holding a shared lock that keeps release from
// removing /run/netns until the caller's namespace is in it: call done
// then (or on failure).
func ensureNetnsDir(record func(kind, name string, data any) error) (done func(), err error) {
	done, err = lockNetnsParent(unix.LOCK_SH)
	if err != nil {
		return nil, err
	}
	if err := prepareNetnsDir(record); err != nil {
		done()
		return nil, err
	}
	return done, nil
}

// lockNetnsParent flocks /run: shared by hosts between making sure
// /run/netns is there and putting their namespace in it, exclusive for
// a release deciding whether it is empty and may go.
func lockNetnsParent(how int) (func(), error) {
	parent := filepath.Dir(netnsDir)
	fd, err := unix.Open(parent, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", parent, err)
	}
	if err := unix.Flock(fd, how); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("lock %s: %w", parent, err)
	}
	return func() { unix.Close(fd) }, nil
}

func prepareNetnsDir(record func(kind, name string, data any) error) error {
	staging := fmt.Sprintf("%s.labctl-%d-%d", netnsDir, os.Getpid(), stagingSeq.Add(1))
	if err := record(KindDir, netnsDir, dirRecord{Path: netnsDir, Staging: staging}); err != nil {
		return err
	}
	if _, err := os.Stat(netnsDir); errors.Is(err, os.ErrNotExist) {
		if err := createNetnsDir(staging); err != nil {
			return err
		}
	}
	// The mark is read, changed and written: only under this lock, or a
	// concurrent host's "mount" could be lost and the mount left behind.
	unlock, err := lockNetnsDir()
	if err != nil {
		return err
	}
	defer unlock()
	if err := record(KindMount, netnsDir, mountRecord{Target: netnsDir}); err != nil {
		return err
	}
	mounted, err := isMountpoint(netnsDir)
	if err != nil || mounted {
		return err
	}
	// Marked before it exists: a crash in between leaves a mark without a
	// mount, which release clears.
	if err := markNetnsDir("mount", true); err != nil {
		return err
	}
	if err := unix.Mount(netnsDir, netnsDir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s: %w", netnsDir, err)
	}
	if err := unix.Mount("", netnsDir, "", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make %s shared: %w", netnsDir, err)
	}
	return nil
}

// stagingSeq makes staging names unique among the hosts one labctl
// process starts at once.
var stagingSeq atomic.Int64

// createNetnsDir makes /run/netns under another name, marks it as
// labctl's and renames it into place, so /run/netns never exists unmarked
// whenever labctl dies; the staging name is in the ledger, for release to
// remove after a crash. Losing the race to another lab is fine.
func createNetnsDir(staging string) error {
	if err := os.Mkdir(staging, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", staging, err)
	}
	err := unix.Setxattr(staging, netnsMadeAttr, []byte("dir"), 0)
	if err == nil || errors.Is(err, unix.ENOTSUP) {
		err = unix.Renameat2(unix.AT_FDCWD, staging, unix.AT_FDCWD, netnsDir, unix.RENAME_NOREPLACE)
		if errors.Is(err, unix.EEXIST) {
			err = nil // another lab made it first
		}
	}
	if rerr := os.Remove(staging); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("create %s: %w", netnsDir, err)
	}
	return nil
}

// lockNetnsDir serialises the "is /run/netns a mount / is it empty"
// decisions between labctl processes with a flock on the directory itself.
func lockNetnsDir() (func(), error) {
	fd, err := unix.Open(netnsDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", netnsDir, err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("lock %s: %w", netnsDir, err)
	}
	return func() { unix.Close(fd) }, nil
}

// netnsMade reports what labctl made of /run/netns ("dir", "mount"). On a
// filesystem without xattrs nothing can be told apart, and an empty
// /run/netns is taken as labctl's: `ip netns add` makes it again.
func netnsMade() (made []string, known bool) {
	buf := make([]byte, 64)
	n, err := unix.Getxattr(netnsDir, netnsMadeAttr, buf)
	switch {
	case err == nil:
		return strings.Fields(string(buf[:n])), true
	case errors.Is(err, unix.ENOTSUP):
		return nil, false
	}
	return nil, true // ENODATA: nothing of it is labctl's
}

// markNetnsDir adds or removes what to the mark.
func markNetnsDir(what string, add bool) error {
	made, known := netnsMade()
	if !known {
		return nil
	}
	made = slices.DeleteFunc(made, func(s string) bool { return s == what })
	if add {
		made = append(made, what)
	}
	var err error
	if len(made) == 0 {
		err = unix.Removexattr(netnsDir, netnsMadeAttr)
		if errors.Is(err, unix.ENODATA) {
			err = nil
		}
	} else {
		err = unix.Setxattr(netnsDir, netnsMadeAttr, []byte(strings.Join(made, " ")), 0)
	}
	if errors.Is(err, unix.ENOTSUP) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("mark %s: %w", netnsDir, err)
	}
	return nil
}

// releaseNetnsMount undoes the bind mount once no named namespace is left
// in it (others' namespaces are mounts below it) and labctl made it.
func releaseNetnsMount(target string) error {
	if target != netnsDir {
		return fmt.Errorf("release mount: labctl only mounts %s, not %q", netnsDir, target)
	}
	done, err := lockNetnsParent(unix.LOCK_EX)
	if err != nil {
		return err
	}
	defer done()
	if _, err := os.Stat(target); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	unlock, err := lockNetnsDir()
	if err != nil {
		return err
	}
	defer unlock()
	entries, err := os.ReadDir(target)
	if err != nil {
		return fmt.Errorf("read %s: %w", target, err)
	}
	if len(entries) > 0 {
		return nil
	}
	made, known := netnsMade()
	if known && !slices.Contains(made, "mount") {
		return nil
	}
	mounted, err := isMountpoint(target)
	if err != nil {
		return err
	}
	if mounted {
		if err := unix.Unmount(target, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("unmount %s: %w", target, err)
		}
	}
	return markNetnsDir("mount", false)
}

// releaseNetnsDir removes /run/netns when labctl made it and nothing uses
// it any more (another instance, `ip netns add`, a mount on it).
func releaseNetnsDir(path, staging string) error {
	if path != netnsDir {
		return fmt.Errorf("release dir: labctl only makes %s, not %q", netnsDir, path)
	}
	if staging != "" {
		if !strings.HasPrefix(staging, netnsDir+".labctl-") || strings.Contains(staging[len(netnsDir):], "/") {
			return fmt.Errorf("release dir: %q is not a labctl staging name", staging)
		}
		// Left by a crash between its mkdir and its rename.
		if err := os.Remove(staging); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", staging, err)
		}
	}
	done, err := lockNetnsParent(unix.LOCK_EX)
	if err != nil {
		return err
	}
	defer done()
	made, known := netnsMade()
	if known && !slices.Contains(made, "dir") {
		return nil
	}
	if err := unix.Rmdir(path); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// ReleaseNetnsDir removes what labctl made of /run/netns (its bind mount,
// the directory) if no named namespace is left in it. gc calls it: a
// lost ledger must not leave them behind.
func ReleaseNetnsDir() error {
	if err := releaseNetnsMount(netnsDir); err != nil {
		return err
	}
	return releaseNetnsDir(netnsDir, "")
}
