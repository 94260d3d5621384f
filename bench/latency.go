package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Latency is one scenario: labctl and the baseline, runs interleaved so
// that drift on the machine affects both alike.
type Latency struct {
	Scenario string `json:"scenario"`
	Lab      string `json:"lab"`
	Labctl   Side   `json:"labctl"`
	Baseline Side   `json:"baseline"`
	// Ratios of the medians, labctl/baseline.
	UpRatio   float64 `json:"up_ratio"`
	DownRatio float64 `json:"down_ratio"`
	OOMRatio  float64 `json:"oom_ratio,omitempty"`
	Error     string  `json:"error,omitempty"`
}

// Side is one implementation's numbers. Up is the CLI's wall time until it
// returns (labctl returns when the lab is ready: hosts up, faults
// observable); OOM, for the OOM lab, the time from starting up until the
// host cgroup's oom_kill counter is seen to move.
type Side struct {
	Up   Series  `json:"up"`
	Down Series  `json:"down"`
	OOM  *Series `json:"first_oom_kill,omitempty"`
}

type scenario struct {
	name, lab string
	oom       bool
}

var scenarios = []scenario{
	{"single host", labSingle, false},
	{"3 hosts, network + service", labNet, false},
	{"systemd host", labSystemd, false},
	{"OOM kill", labOOM, true},
}

// baselineKind is the baseline.sh scenario doing the same work as lab.
var baselineKind = map[string]string{labSingle: "single", labNet: "net", labSystemd: "systemd", labOOM: "oom"}

type sample struct{ up, down, oom []time.Duration }

func measureLatency(cfg config, sc scenario, runs int) Latency {
	res := Latency{Scenario: sc.name, Lab: sc.lab}
	kind := baselineKind[sc.lab]
	labctl := func(i int) (time.Duration, time.Duration, time.Duration, error) {
		name := fmt.Sprintf("bench-%s-%d", kind, i)
		return cycle(cfg.labctl, []string{"up", "--name", name, sc.lab}, []string{"down", name}, sc.oom, "labctl")
	}
	base := func(i int) (time.Duration, time.Duration, time.Duration, error) {
		name := fmt.Sprintf("b%d", i)
		return cycle(cfg.baseline, []string{"up", kind, name}, []string{"down", kind, name}, sc.oom, "labctl-bench-baseline")
	}
	var l, b sample
	// Run 0 is a warm-up (page cache, first-use paths), not counted.
	for i := 0; i <= runs; i++ {
		for _, side := range []struct {
			run func(int) (time.Duration, time.Duration, time.Duration, error)
			s   *sample
		}{{labctl, &l}, {base, &b}} {
			up, down, oom, err := side.run(i)
			if err != nil {
				res.Error = err.Error()
				fmt.Fprintf(os.Stderr, "latency %s: run %d: %v\n", sc.name, i, err)
				return finishLatency(res, l, b)
			}
			if i > 0 {
				side.s.up, side.s.down = append(side.s.up, up), append(side.s.down, down)
				if sc.oom {
					side.s.oom = append(side.s.oom, oom)
				}
			}
		}
		fmt.Fprintf(os.Stderr, "\rlatency %-28s %d/%d", sc.name, i, runs)
	}
	fmt.Fprintln(os.Stderr)
	return finishLatency(res, l, b)
}

func finishLatency(res Latency, l, b sample) Latency {
	res.Labctl = Side{Up: summarize(l.up), Down: summarize(l.down)}
	res.Baseline = Side{Up: summarize(b.up), Down: summarize(b.down)}
	res.UpRatio = ratio(res.Labctl.Up.MedianMS, res.Baseline.Up.MedianMS)
	res.DownRatio = ratio(res.Labctl.Down.MedianMS, res.Baseline.Down.MedianMS)
	if len(l.oom) > 0 || len(b.oom) > 0 {
		lo, bo := summarize(l.oom), summarize(b.oom)
		res.Labctl.OOM, res.Baseline.OOM = &lo, &bo
		res.OOMRatio = ratio(lo.MedianMS, bo.MedianMS)
	}
	return res
}

// cycle runs one up and one down. With oom it also watches, from the
// start of up, the memory cgroups under parent for the first OOM kill.
func cycle(bin string, up, down []string, oom bool, parent string) (upD, downD, oomD time.Duration, err error) {
	var seen chan time.Duration
	stop := make(chan struct{})
	if oom {
		seen = make(chan time.Duration, 1)
		go watchOOM(parent, time.Now(), seen, stop)
	}
	upD, err = timed(append([]string{bin}, up...)...)
	if oom {
		select {
		case oomD = <-seen:
		case <-time.After(30 * time.Second):
			err = fmt.Errorf("no OOM kill observed within 30s of up (up: %v)", err)
		}
	}
	close(stop)
	if err != nil {
		_, _ = timed(append([]string{bin}, down...)...) // best effort: leave nothing running
		return 0, 0, 0, err
	}
	downD, err = timed(append([]string{bin}, down...)...)
	return upD, downD, oomD, err
}

// watchOOM polls every millisecond for a host memory cgroup below parent
// whose oom_kill counter is above zero, and reports the time since start.
func watchOOM(parent string, start time.Time, seen chan<- time.Duration, stop <-chan struct{}) {
	pattern := filepath.Join("/sys/fs/cgroup/memory", parent, "*", "*", "memory.oom_control")
	if _, err := os.Stat("/sys/fs/cgroup/memory"); err != nil {
		pattern = filepath.Join("/sys/fs/cgroup", parent, "*", "*", "memory.events") // cgroup v2
	}
	for {
		files, _ := filepath.Glob(pattern)
		for _, f := range files {
			if oomKills(f) > 0 {
				seen <- time.Since(start)
				return
			}
		}
		select {
		case <-stop:
			return
		case <-time.After(time.Millisecond):
		}
	}
}

// oomKills reads the "oom_kill N" line of memory.oom_control (v1) or
// memory.events (v2).
func oomKills(path string) int64 { return statusField(path, "oom_kill ") }
