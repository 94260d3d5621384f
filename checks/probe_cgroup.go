package checks

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/labctl/labctl/labs"
)

// CgroupParams checks a host's cgroup: either an event counter (how much
// it moved since a mark) or a limit (at least some value).
type CgroupParams struct {
	Controller  string `yaml:"controller" json:"controller" doc:"memory, pids or cpu" required:"true"`
	Counter     string `yaml:"counter,omitempty" json:"counter,omitempty" doc:"event counter: oom_kill, failcnt (memory); max (pids.events); nr_throttled, throttled_time, throttled_usec, nr_periods (cpu)"`
	Since       string `yaml:"since,omitempty" json:"since,omitempty" doc:"counter: count from the mark taken at up (default) or at the previous check"`
	MaxIncrease *int64 `yaml:"max_increase,omitempty" json:"max_increase,omitempty" doc:"counter: largest increase allowed (default 0)"`
	Limit       string `yaml:"limit,omitempty" json:"limit,omitempty" doc:"limit: memory, pids or cpu_quota"`
	AtLeast     string `yaml:"at_least,omitempty" json:"at_least,omitempty" doc:"limit: smallest value allowed: a size for memory (128Mi), a count for pids, cores for cpu_quota (0.5); unlimited always passes"`
}

// Since values.
const (
	SinceUp    = "up"
	SinceCheck = "check"
)

// MarkKey is the Target.Mark key under which the session records a
// counter's value at up (since = SinceUp) or at each check (SinceCheck).
func MarkKey(host, controller, counter, since string) string {
	return host + "/" + controller + "/" + counter + "@" + since
}

// limitController is the controller each limit lives in.
var limitController = map[string]string{"memory": "memory", "pids": "pids", "cpu_quota": "cpu"}

// Validate checks the combination of fields.
func (p *CgroupParams) Validate() error {
	switch p.Controller {
	case "memory", "pids", "cpu":
	default:
		return &labs.ParamError{Field: "controller", Msg: fmt.Sprintf("%q is not memory, pids or cpu", p.Controller)}
	}
	if (p.Counter == "") == (p.Limit == "") {
		return &labs.ParamError{Field: "counter", Msg: "set exactly one of counter and limit"}
	}
	if p.Counter != "" {
		if p.Since != SinceUp && p.Since != SinceCheck {
			return &labs.ParamError{Field: "since", Msg: fmt.Sprintf("%q is not up or check", p.Since)}
		}
		if p.MaxIncrease != nil && *p.MaxIncrease < 0 {
			return &labs.ParamError{Field: "max_increase", Msg: "must not be negative"}
		}
		if p.AtLeast != "" {
			return &labs.ParamError{Field: "at_least", Msg: "goes with limit, not counter"}
		}
		return nil
	}
	ctrl, ok := limitController[p.Limit]
	if !ok {
		return &labs.ParamError{Field: "limit", Msg: fmt.Sprintf("%q is not memory, pids or cpu_quota", p.Limit)}
	}
	if ctrl != p.Controller {
		return &labs.ParamError{Field: "limit", Msg: fmt.Sprintf("the %s limit is in the %s controller, not %s", p.Limit, ctrl, p.Controller)}
	}
	if p.AtLeast == "" {
		return &labs.ParamError{Field: "at_least", Msg: "required with limit"}
	}
	if _, err := parseLimitValue(p.Limit, p.AtLeast); err != nil {
		return &labs.ParamError{Field: "at_least", Msg: err.Error()}
	}
	return nil
}

type cgroupProber struct{}

func init() {
	Register(labs.ProbeKind{
		Name: "cgroup",
		Doc:  "reads the host's cgroup: an event counter's increase since up or the last check (oom_kill, pids max, nr_throttled), or a limit's value",
		NewParams: func() any {
			zero := int64(0)
			return &CgroupParams{Since: SinceUp, MaxIncrease: &zero}
		},
	}, cgroupProber{})
}

func (cgroupProber) Probe(ctx context.Context, t Target, host string, params any) Result {
	p := params.(*CgroupParams)
	dir, err := t.CgroupDir(host, p.Controller)
	if err != nil {
		return errorResult(fmt.Errorf("host %s: %w", host, err))
	}
	if p.Limit != "" {
		return probeLimit(dir, p)
	}
	now, err := Counter(dir, p.Controller, p.Counter)
	if err != nil {
		return errorResult(err)
	}
	since := p.Since
	if since == "" {
		since = SinceUp
	}
	maxInc := int64(0)
	if p.MaxIncrease != nil {
		maxInc = *p.MaxIncrease
	}
	base, from := int64(0), "ever"
	if mark, ok := t.Mark(MarkKey(host, p.Controller, p.Counter, since)); ok {
		if base, err = strconv.ParseInt(strings.TrimSpace(mark), 10, 64); err != nil {
			return errorResult(fmt.Errorf("mark for %s: %q is not a number", p.Counter, mark))
		}
		from = "since " + map[string]string{SinceUp: "the lab started", SinceCheck: "the last check"}[since]
	}
	delta := now - base
	res := Result{
		Seen:   fmt.Sprintf("%s %s: +%d %s (now %d)", p.Controller, p.Counter, delta, from, now),
		Wanted: fmt.Sprintf("%s %s: at most +%d", p.Controller, p.Counter, maxInc),
	}
	if delta > maxInc {
		res.Message = fmt.Sprintf("%s went up by %d %s", p.Counter, delta, from)
		return res
	}
	res.Pass, res.Message = true, fmt.Sprintf("%s did not go up more than allowed", p.Counter)
	return res
}

func probeLimit(dir string, p *CgroupParams) Result {
	want, err := parseLimitValue(p.Limit, p.AtLeast)
	if err != nil {
		return errorResult(fmt.Errorf("at_least: %w", err))
	}
	got, err := readLimit(dir, p.Limit)
	if err != nil {
		return errorResult(err)
	}
	res := Result{
		Seen:   fmt.Sprintf("%s limit %s", p.Limit, formatLimit(p.Limit, got)),
		Wanted: fmt.Sprintf("%s limit at least %s", p.Limit, p.AtLeast),
	}
	if got < want {
		res.Message = fmt.Sprintf("the %s limit is still too low", p.Limit)
		return res
	}
	res.Pass, res.Message = true, fmt.Sprintf("the %s limit is high enough", p.Limit)
	return res
}

// parseLimitValue reads at_least: a size for memory, a count for pids,
// cores for cpu_quota.
func parseLimitValue(limit, s string) (float64, error) {
	switch limit {
	case "memory":
		sz, err := labs.ParseSize(s)
		return float64(sz), err
	case "pids":
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("%q is not a process count", s)
		}
		return float64(n), nil
	case "cpu_quota":
		f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || f <= 0 || math.IsInf(f, 0) || math.IsNaN(f) {
			return 0, fmt.Errorf("%q is not a number of cores, e.g. 0.5", s)
		}
		return f, nil
	}
	return 0, fmt.Errorf("unknown limit %q", limit)
}

func formatLimit(limit string, v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "unlimited"
	case limit == "memory":
		return labs.Size(int64(v)).String()
	case limit == "cpu_quota":
		return strconv.FormatFloat(v, 'g', 4, 64) + " cores"
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}

// v1Unlimited: cgroup v1 reports "no memory limit" as the largest
// page-aligned int64, not as a keyword.
const v1Unlimited = math.MaxInt64 &^ 4095

// readLimit returns a limit's value (bytes, count, or cores), +Inf when
// unlimited, from v2 files when present and v1 files otherwise.
func readLimit(dir, limit string) (float64, error) {
	switch limit {
	case "memory":
		if s, err := readValue(dir, "memory.max"); err == nil {
			return parseMaxOrInt(s)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return 0, err
		}
		s, err := readValue(dir, "memory.limit_in_bytes")
		if err != nil {
			return 0, err
		}
		v, err := parseMaxOrInt(s)
		if err == nil && v >= v1Unlimited {
			return math.Inf(1), nil
		}
		return v, err
	case "pids":
		s, err := readValue(dir, "pids.max")
		if err != nil {
			return 0, err
		}
		return parseMaxOrInt(s)
	case "cpu_quota":
		if s, err := readValue(dir, "cpu.max"); err == nil {
			quota, period, _ := strings.Cut(s, " ")
			q, err := parseMaxOrInt(quota)
			if err != nil || math.IsInf(q, 1) {
				return q, err
			}
			pd, err := strconv.ParseFloat(period, 64)
			if err != nil || pd <= 0 {
				return 0, fmt.Errorf("%s/cpu.max: bad period %q", dir, period)
			}
			return q / pd, nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return 0, err
		}
		qs, err := readValue(dir, "cpu.cfs_quota_us")
		if err != nil {
			return 0, err
		}
		ps, err := readValue(dir, "cpu.cfs_period_us")
		if err != nil {
			return 0, err
		}
		q, err1 := strconv.ParseFloat(qs, 64)
		pd, err2 := strconv.ParseFloat(ps, 64)
		if err1 != nil || err2 != nil || pd <= 0 {
			return 0, fmt.Errorf("%s: bad cpu quota %q/%q", dir, qs, ps)
		}
		if q < 0 {
			return math.Inf(1), nil
		}
		return q / pd, nil
	}
	return 0, fmt.Errorf("unknown limit %q", limit)
}

func parseMaxOrInt(s string) (float64, error) {
	if s == "max" {
		return math.Inf(1), nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("bad cgroup value %q", s)
	}
	return float64(v), nil
}

func readValue(dir, file string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		return "", fmt.Errorf("read cgroup file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Counter reads an event counter of a cgroup directory, from the cgroup v2
// files when they exist there and the v1 files otherwise:
//
//	memory oom_kill        memory.events oom_kill      | memory.oom_control oom_kill
//	memory failcnt         memory.events max           | memory.failcnt
//	pids   max             pids.events max (both)
//	cpu    nr_throttled    cpu.stat nr_throttled (both); nr_periods likewise
//	cpu    throttled_time  cpu.stat throttled_usec×1000 | cpu.stat throttled_time (ns)
//	cpu    throttled_usec  cpu.stat throttled_usec      | cpu.stat throttled_time/1000
//
// The session records marks with it (see MarkKey).
func Counter(dir, controller, name string) (int64, error) {
	switch controller {
	case "memory":
		if exists(dir, "memory.events") {
			key := name
			if name == "failcnt" {
				key = "max"
			}
			return keyedValue(dir, "memory.events", key)
		}
		switch name {
		case "failcnt":
			s, err := readValue(dir, "memory.failcnt")
			if err != nil {
				return 0, err
			}
			return strconv.ParseInt(s, 10, 64)
		default:
			return keyedValue(dir, "memory.oom_control", name)
		}
	case "pids":
		return keyedValue(dir, "pids.events", name)
	case "cpu":
		v2 := exists(dir, "cpu.max")
		switch {
		case name == "throttled_time" && v2:
			us, err := keyedValue(dir, "cpu.stat", "throttled_usec")
			return us * 1000, err
		case name == "throttled_usec" && !v2:
			ns, err := keyedValue(dir, "cpu.stat", "throttled_time")
			return ns / 1000, err
		}
		return keyedValue(dir, "cpu.stat", name)
	}
	return 0, fmt.Errorf("unknown cgroup controller %q", controller)
}

func exists(dir, file string) bool {
	_, err := os.Stat(filepath.Join(dir, file))
	return err == nil
}

// keyedValue reads "key value" lines (memory.events, cpu.stat, ...).
func keyedValue(dir, file, key string) (int64, error) {
	f, err := os.Open(filepath.Join(dir, file))
	if err != nil {
		return 0, fmt.Errorf("read cgroup counter: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		if ok && k == key {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s/%s: bad %s value %q", dir, file, key, v)
			}
			return n, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read %s/%s: %w", dir, file, err)
	}
	return 0, fmt.Errorf("%s/%s has no %q counter", dir, file, key)
}
