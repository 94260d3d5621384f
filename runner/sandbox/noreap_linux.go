//go:build linux

package sandbox

import (
	"os"
	"os/signal"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/labctl/labctl/internal/reexec"
)

// A host's init can be told to stop reaping orphans, so the fault
// process.init-no-reap (faults/process) can play a host whose PID 1 does
// not reap, as an application or a shell script started as PID 1 would
// be: orphans then stay zombies whose parent is PID 1, made by the kernel.
//
// The switch is a pair of real-time signals sent from the machine (the
// fault, and its Revert): pauseReapSignal stops reaping, resumeReapSignal
// resumes it and reaps what piled up. The numbers are duplicated in
// faults/process/initnoreap.go (faults do not import runner).
const (
	pauseReapSignal  = unix.Signal(40) // SIGRTMIN+6
	resumeReapSignal = unix.Signal(41) // SIGRTMIN+7
)

var reapingPaused atomic.Bool

func init() {
	// Only the host's init listens; every other labctl process keeps the
	// default action for these signals.
	if os.Getenv(reexec.EnvHelper) != helperInit {
		return
	}
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, pauseReapSignal, resumeReapSignal)
	go func() {
		for s := range ch {
			if s == pauseReapSignal {
				reapingPaused.Store(true)
				continue
			}
			reapingPaused.Store(false)
			reapAll()
		}
	}()
}

// reapUnlessPaused is what the init's reap loop does on every SIGCHLD.
func reapUnlessPaused() {
	if !reapingPaused.Load() {
		reapAll()
	}
}
