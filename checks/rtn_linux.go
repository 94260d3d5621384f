package checks

import "syscall"

// Route types of the kernel's answer to a route lookup.
const (
	rtnBlackhole   = syscall.RTN_BLACKHOLE
	rtnUnreachable = syscall.RTN_UNREACHABLE
	rtnProhibit    = syscall.RTN_PROHIBIT
)
