package rootfs

import (
	"errors"
	"os"
)

// lockExclusive: the root filesystem is built on Linux only; this lets the
// CLI build on Windows, where it drives the VM.
func lockExclusive(f *os.File) error { return errors.New("the root filesystem is built on Linux") }
