// Command bench measures labctl against a plain-shell baseline (`bench`)
// and proves that many up/down cycles and killed ups leave the machine as
// it was (`soak`). It measures and reports; the only pass/fail is the
// soak's residue check (and commands that fail).
//
//	go build -o bin/labbench ./bench
//	bin/labbench bench [--runs 30] [--json bin/bench.json]
//	bin/labbench soak  [--cycles 1000] [--net-cycles 200] [--kills 200]
//	bin/labbench soak  --replay first-look@63.7ms   (one kill point from the log)
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/labctl/labctl/runner"
)

// Labs measured: the default single-host lab, a 3-host network lab with a
// service, a systemd host lab and the OOM lab.
const (
	labSingle  = "first-look"
	labNet     = "no-default-route"
	labSystemd = "exec-not-found"
	labOOM     = "oom-killed-worker"
)

type config struct {
	labctl   string
	baseline string
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var cfg config
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	fs.StringVar(&cfg.labctl, "labctl", "bin/labctl", "the labctl binary")
	fs.StringVar(&cfg.baseline, "baseline", "bench/baseline.sh", "the plain-shell baseline")
	var err error
	switch os.Args[1] {
	case "bench":
		var o benchOptions
		fs.IntVar(&o.runs, "runs", 30, "runs per latency scenario (each of labctl and baseline)")
		fs.StringVar(&o.jsonFile, "json", "bin/bench.json", "write the results here")
		fs.StringVar(&o.density, "density", "10,50,100,200,500", "concurrent instance counts")
		fs.IntVar(&o.parallel, "parallel", 8, "concurrent labctl up/down processes while building density")
		fs.StringVar(&o.jobs, "catalog-jobs", "1,2,4", "labctl test -j values")
		fs.StringVar(&o.only, "only", "latency,density,catalog", "parts to run")
		_ = fs.Parse(os.Args[2:])
		err = runBench(cfg, o)
	case "soak":
		var o soakOptions
		fs.IntVar(&o.cycles, "cycles", 1000, "up/down cycles of "+labSingle)
		fs.IntVar(&o.netCycles, "net-cycles", 200, "up/down cycles of "+labNet)
		fs.IntVar(&o.kills, "kills", 200, "SIGKILLed ups followed by gc")
		fs.Int64Var(&o.seed, "seed", 0, "seed of the kill points (default: drawn, printed)")
		fs.StringVar(&o.killLog, "kill-log", "bin/soak-kills.log", "every kill point, for replay")
		fs.StringVar(&o.replay, "replay", "", "run one logged kill point (LAB@DELAY) instead of the soak")
		_ = fs.Parse(os.Args[2:])
		err = runSoak(cfg, o)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "labbench:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: labbench bench|soak [flags] (labbench bench -h)")
	os.Exit(2)
}

// timed runs argv and returns its wall time; the error carries its output.
func timed(argv ...string) (time.Duration, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if err != nil {
		return d, fmt.Errorf("%s: %v\n%s", strings.Join(argv, " "), err, strings.TrimSpace(out.String()))
	}
	return d, nil
}

// requireIdle refuses to measure on a machine where labs already run:
// their processes and teardown would be in the numbers, and the residue
// checks compare with a snapshot that has them.
func requireIdle(cfg config) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (labs create namespaces and cgroups)")
	}
	for _, p := range []string{cfg.labctl, cfg.baseline} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%w (run from the repository root after make build)", err)
		}
	}
	list, err := runner.List()
	if err != nil {
		return err
	}
	if len(list) > 0 {
		var names []string
		for _, in := range list {
			names = append(names, in.Name)
		}
		return fmt.Errorf("labs are running (%s): measure on an idle machine", strings.Join(names, ", "))
	}
	return nil
}

// Machine describes where the numbers were taken.
type Machine struct {
	Date      string `json:"date"`
	CPUs      int    `json:"cpus"`
	MemTotal  string `json:"mem_total"`
	Kernel    string `json:"kernel"`
	Cgroups   string `json:"cgroups"`
	OS        string `json:"os"`
	Labctl    string `json:"labctl"`
	GoVersion string `json:"go"`
}

func describeMachine(cfg config) Machine {
	m := Machine{Date: time.Now().UTC().Format(time.RFC3339), CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	if kb, err := meminfo("MemTotal"); err == nil {
		m.MemTotal = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	m.Cgroups = cgroupLayout()
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
				m.OS = strings.Trim(v, `"`)
			}
		}
	}
	if out, err := exec.Command(cfg.labctl, "version").Output(); err == nil {
		m.Labctl = strings.TrimSpace(string(out))
	}
	return m
}

// cgroupLayout names the machine's layout as labctl's docs do.
func cgroupLayout() string {
	_, v2root := os.Stat("/sys/fs/cgroup/cgroup.controllers")
	_, v1mem := os.Stat("/sys/fs/cgroup/memory/memory.limit_in_bytes")
	_, hybrid := os.Stat("/sys/fs/cgroup/unified/cgroup.controllers")
	switch {
	case v2root == nil:
		return "unified (cgroup v2)"
	case v1mem == nil && hybrid == nil:
		return "hybrid (v1 controllers incl. memory, cgroup2 at /sys/fs/cgroup/unified)"
	case v1mem == nil:
		return "legacy (cgroup v1)"
	}
	return "unknown"
}

func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}
