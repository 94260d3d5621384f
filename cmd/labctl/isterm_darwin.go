package main

import "golang.org/x/sys/unix"

// macOS users run labctl as a VM-mode client (labctl vm ..., --vm).
func fdIsTerminal(fd uintptr) bool {
	_, err := unix.IoctlGetTermios(int(fd), unix.TIOCGETA)
	return err == nil
}
