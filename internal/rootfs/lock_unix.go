//go:build unix

package rootfs

import (
	"os"

	"golang.org/x/sys/unix"
)

// lockExclusive waits for the build lock.
func lockExclusive(f *os.File) error { return unix.Flock(int(f.Fd()), unix.LOCK_EX) }
