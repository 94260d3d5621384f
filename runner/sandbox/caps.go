//go:build linux

package sandbox

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// droppedCaps are the capabilities no process of a host keeps: loading
// kernel modules, rebooting, setting the machine's clock and raw I/O act on
// the whole machine, not on the host. Everything else stays, so the learner
// can mount in the host's mount namespace, configure its network and write
// its cgroup files; CAP_SYSLOG stays so dmesg shows the OOM killer's lines.
var droppedCaps = []uintptr{unix.CAP_SYS_MODULE, unix.CAP_SYS_BOOT, unix.CAP_SYS_TIME, unix.CAP_SYS_RAWIO}

// dropCaps removes droppedCaps from the bounding, effective, permitted,
// inheritable and ambient sets of the calling thread (capabilities are
// per-thread: the caller holds it locked and forks or stays on it).
func dropCaps() error {
	for _, c := range droppedCaps {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, c, 0, 0, 0); err != nil {
			return fmt.Errorf("drop capability %d from the bounding set: %w", c, err)
		}
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil && err != unix.EINVAL {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("read capabilities: %w", err)
	}
	for _, c := range droppedCaps {
		word, bit := c/32, uint32(1)<<(c%32)
		data[word].Effective &^= bit
		data[word].Permitted &^= bit
		data[word].Inheritable &^= bit
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("drop capabilities: %w", err)
	}
	return nil
}
