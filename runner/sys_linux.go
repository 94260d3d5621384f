package runner

import (
	"os"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The Linux calls the runner makes, behind small names so the CLI also
// builds off Linux (sys_other.go), where it only drives the VM.

const familyV4 = netlink.FAMILY_V4

var errWouldBlock error = syscall.EWOULDBLOCK

func memfdCreate(name string) (int, error) { return unix.MemfdCreate(name, unix.MFD_CLOEXEC) }

func unmountDetach(path string) error { return unix.Unmount(path, unix.MNT_DETACH) }

func flockExclusive(f *os.File, nonblock bool) error {
	how := syscall.LOCK_EX
	if nonblock {
		how |= syscall.LOCK_NB
	}
	return syscall.Flock(int(f.Fd()), how)
}
