//go:build !linux

package checks

// The kernel's route types (linux/rtnetlink.h), so the CLI builds off
// Linux, where no route probe runs.
const (
	rtnBlackhole   = 6
	rtnUnreachable = 7
	rtnProhibit    = 8
)
