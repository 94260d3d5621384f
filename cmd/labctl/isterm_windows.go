package main

import "golang.org/x/sys/windows"

// Windows users run labctl as a VM-mode client (labctl vm ..., --vm).
func fdIsTerminal(fd uintptr) bool {
	var mode uint32
	return windows.GetConsoleMode(windows.Handle(fd), &mode) == nil
}
