package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/labctl/labctl/internal/hostsnap"
	"github.com/labctl/labctl/runner"
)

type benchOptions struct {
	runs     int
	jsonFile string
	density  string
	parallel int
	jobs     string
	only     string
}

// Results is what bench writes as JSON.
type Results struct {
	Machine  Machine       `json:"machine"`
	Runs     int           `json:"runs"`
	Latency  []Latency     `json:"latency,omitempty"`
	Density  []DensityStep `json:"density,omitempty"`
	Catalog  []Catalog     `json:"catalog,omitempty"`
	Residue  []string      `json:"residue,omitempty"`
	Duration string        `json:"duration"`
}

func runBench(cfg config, o benchOptions) error {
	if err := requireIdle(cfg); err != nil {
		return err
	}
	densityN, err := ints(o.density)
	if err != nil {
		return fmt.Errorf("--density: %w", err)
	}
	jobs, err := ints(o.jobs)
	if err != nil {
		return fmt.Errorf("--catalog-jobs: %w", err)
	}
	start := time.Now()
	res := Results{Machine: describeMachine(cfg), Runs: o.runs}
	before, err := hostsnap.Take()
	if err != nil {
		return err
	}
	// Every part must leave the machine as it found it; a part that does
	// not is reported (the numbers after it are suspect).
	settled := func(part string) {
		if diff, err := runner.SettledDiff(before); err != nil || diff != "" {
			res.Residue = append(res.Residue, fmt.Sprintf("after %s: %s%v", part, diff, err))
		}
		if left := baselineLeftovers(); left != "" {
			res.Residue = append(res.Residue, fmt.Sprintf("after %s: baseline left %s", part, left))
		}
	}
	if strings.Contains(o.only, "latency") {
		for _, sc := range scenarios {
			res.Latency = append(res.Latency, measureLatency(cfg, sc, o.runs))
			settled("latency " + sc.name)
		}
	}
	if strings.Contains(o.only, "density") {
		res.Density = measureDensity(cfg, densityN, o.parallel, before)
		settled("density")
	}
	if strings.Contains(o.only, "catalog") {
		for _, j := range jobs {
			res.Catalog = append(res.Catalog, measureCatalog(cfg, j))
			settled(fmt.Sprintf("catalog -j %d", j))
		}
	}
	res.Duration = time.Since(start).Round(time.Second).String()
	fmt.Print(markdown(res))
	if err := writeJSON(o.jsonFile, res); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "results: %s\n", o.jsonFile)
	var failed []string
	for _, l := range res.Latency {
		if l.Error != "" {
			failed = append(failed, "latency "+l.Scenario)
		}
	}
	for _, c := range res.Catalog {
		if c.Error != "" {
			failed = append(failed, fmt.Sprintf("catalog -j %d", c.Jobs))
		}
	}
	if len(res.Residue) > 0 {
		failed = append(failed, "residue")
	}
	if len(failed) > 0 {
		return errors.New("could not measure: " + strings.Join(failed, ", "))
	}
	return nil
}

// baselineLeftovers names what baseline.sh left: its cgroups, netns and
// state are outside what hostsnap watches (that is labctl's names).
func baselineLeftovers() string {
	var left []string
	for _, p := range []string{"/sys/fs/cgroup/*/labctl-bench-baseline", "/sys/fs/cgroup/labctl-bench-baseline", "/run/netns/bb-*", "/run/labctl-bench-baseline"} {
		m, _ := filepath.Glob(p)
		left = append(left, m...)
	}
	return strings.Join(left, " ")
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// markdown renders the results as the tables of bench/RESULTS.md.
func markdown(r Results) string {
	var b strings.Builder
	m := r.Machine
	fmt.Fprintf(&b, "Measured %s on %d CPUs, %s RAM, kernel %s, %s, cgroups %s; %s, %s. Took %s.\n\n",
		m.Date, m.CPUs, m.MemTotal, m.Kernel, m.OS, m.Cgroups, m.Labctl, m.GoVersion, r.Duration)
	if len(r.Latency) > 0 {
		fmt.Fprintf(&b, "### Latency (ms, wall time of the CLI, %d runs each after one warm-up; ratio = labctl/baseline of the medians)\n\n", r.Runs)
		var rows [][]string
		for _, l := range r.Latency {
			if l.Error != "" {
				rows = append(rows, []string{l.Scenario, "`" + l.Lab + "`", "failed: " + firstLine(l.Error), "", "", "", ""})
				continue
			}
			if l.Labctl.OOM != nil {
				rows = append(rows, row(l.Scenario+": first OOM kill seen", l.Lab, *l.Labctl.OOM, *l.Baseline.OOM))
			}
			rows = append(rows, row(l.Scenario+": up → ready", l.Lab, l.Labctl.Up, l.Baseline.Up))
			rows = append(rows, row(l.Scenario+": down", l.Lab, l.Labctl.Down, l.Baseline.Down))
		}
		b.WriteString(table([]string{"scenario", "lab", "labctl p50", "labctl p95", "baseline p50", "baseline p95", "ratio p50"}, rows))
		b.WriteString("\n")
	}
	if len(r.Density) > 0 {
		b.WriteString("### Density (N concurrent `first-look` instances)\n\n")
		var rows [][]string
		for _, d := range r.Density {
			result := "ok"
			if d.Error != "" {
				result = "stopped: " + firstLine(d.Error)
			}
			if d.Residue != "" {
				result += "; residue after down"
			}
			rows = append(rows, []string{strconv.Itoa(d.N), fmt.Sprintf("%d", d.Up), fmt.Sprintf("%.1f", d.UpWallS), fmt.Sprintf("%.1f", d.DownWallS),
				fmt.Sprintf("%.1f", d.MemPerInstanceMiB), fmt.Sprintf("%.1f", d.RSSPerHostMiB), fmt.Sprintf("%.1f", d.PSSPerHostMiB), fmt.Sprintf("%.0f", d.ThreadsPerHost), result})
		}
		b.WriteString(table([]string{"N", "up", "all up (s)", "all down (s)", "MemAvailable drop / instance (MiB)", "labctl RSS / host (MiB)", "labctl PSS / host (MiB)", "threads / host", "result"}, rows))
		b.WriteString("\n")
	}
	if len(r.Catalog) > 0 {
		b.WriteString("### Catalog (`labctl test -j N labs/`)\n\n")
		var rows [][]string
		base := 0.0
		for _, c := range r.Catalog {
			if c.Jobs == 1 {
				base = c.WallS
			}
		}
		for _, c := range r.Catalog {
			result := fmt.Sprintf("%d/%d passed", c.Passed, c.Labs)
			if len(c.Failed) > 0 {
				result += " (failed: " + strings.Join(c.Failed, ", ") + ")"
			}
			if c.Error != "" {
				result = "error: " + firstLine(c.Error)
			}
			speedup := "–"
			if base > 0 && c.WallS > 0 {
				speedup = fmt.Sprintf("%.2f×", base/c.WallS)
			}
			var slow []string
			for _, s := range c.Slowest {
				slow = append(slow, fmt.Sprintf("%s %.0fs", s.Lab, s.S))
			}
			rows = append(rows, []string{strconv.Itoa(c.Jobs), fmtDur(c.WallS), speedup, fmtDur(c.LabS), result, strings.Join(slow, ", ")})
		}
		b.WriteString(table([]string{"-j", "wall", "speed-up vs -j 1", "sum of lab times", "result", "slowest labs"}, rows))
		b.WriteString("\n")
	}
	if len(r.Residue) > 0 {
		b.WriteString("**Residue:**\n\n```\n" + strings.Join(r.Residue, "\n") + "\n```\n")
	}
	return b.String()
}

func row(name, lab string, l, b Series) []string {
	return []string{name, "`" + lab + "`", fmtMS(l.MedianMS), fmtMS(l.P95MS), fmtMS(b.MedianMS), fmtMS(b.P95MS), fmtRatio(ratio(l.MedianMS, b.MedianMS))}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

func fmtDur(s float64) string {
	return (time.Duration(s*10) * time.Second / 10).Round(time.Second).String()
}
