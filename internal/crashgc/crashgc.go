// Package crashgc SIGKILLs a real `labctl up` at a chosen point, collects
// what it left with `labctl gc` (and `down` when the instance had become
// ready) and compares the machine with a snapshot taken before. The crash
// test (cmd/labctl) and the soak (bench/) share it.
package crashgc

import (
	"bytes"
	"fmt"
	"os/exec"
	"time"

	"github.com/labctl/labctl/internal/hostsnap"
	"github.com/labctl/labctl/runner"
)

// ResidueError is a kill point after which the machine differs from the
// snapshot: what the soak counts as residue, not as a failed command.
type ResidueError struct {
	Diff string // -before +after
}

func (e *ResidueError) Error() string {
	return "the machine changed after gc (-before +after):\n" + e.Diff
}

// MeasureUp times one complete `labctl up` of lab (and removes it again),
// the span within which kill points are drawn.
func MeasureUp(bin, lab, name string) (time.Duration, error) {
	start := time.Now()
	if out, err := exec.Command(bin, "up", "--name", name, lab).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("up %s: %v\n%s", lab, err, out)
	}
	d := time.Since(start)
	if out, err := exec.Command(bin, "down", name).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("down %s: %v\n%s", name, err, out)
	}
	return d, nil
}

// KillUpThenGC starts `bin up --name name lab`, SIGKILLs it after delay,
// runs gc, takes down the instance if it had become ready (gc rightly
// keeps a live lab), and requires the machine to equal before. finished
// reports whether up had completed before the kill.
func KillUpThenGC(bin, lab, name string, delay time.Duration, before *hostsnap.Snapshot) (finished bool, err error) {
	cmd := exec.Command(bin, "up", "--name", name, lab)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return false, err
	}
	timer := time.AfterFunc(delay, func() { _ = cmd.Process.Kill() })
	finished = cmd.Wait() == nil
	timer.Stop()
	if out, err := exec.Command(bin, "gc").CombinedOutput(); err != nil {
		return finished, fmt.Errorf("gc: %v\n%s", err, out)
	}
	if in, err := runner.Open(name); err == nil && in.Phase == runner.PhaseReady {
		if out, err := exec.Command(bin, "down", name).CombinedOutput(); err != nil {
			return finished, fmt.Errorf("down of the ready instance: %v\n%s", err, out)
		}
	}
	diff, err := runner.SettledDiff(before)
	if err != nil {
		return finished, err
	}
	if diff != "" {
		return finished, &ResidueError{Diff: diff}
	}
	return finished, nil
}
