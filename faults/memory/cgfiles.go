package memory

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// The kinds of this package read a host's cgroup from the machine side.
// A host's cgroup is v1 (one directory per controller, as on this
// project's hybrid development machines) or v2 (one unified directory);
// each reader picks the v2 file when it exists in the directory and the
// v1 file otherwise, so the same code serves both layouts. The file names
// the learner should look at come from the same choice (see files).

// cgFiles names the files of one layout that the labs point learners to.
type cgFiles struct {
	MemoryLimit string // memory.max | memory.limit_in_bytes
	MemoryStat  string // memory.stat on both
	OOMCounter  string // memory.events | memory.oom_control
	CPUQuota    string // cpu.max | cpu.cfs_quota_us
	CPUStat     string // cpu.stat on both
}

var (
	v1Files = cgFiles{"memory.limit_in_bytes", "memory.stat", "memory.oom_control", "cpu.cfs_quota_us", "cpu.stat"}
	v2Files = cgFiles{"memory.max", "memory.stat", "memory.events", "cpu.max", "cpu.stat"}
)

// isV2 reports whether a cgroup directory is a unified (v2) one: only
// v2 has cgroup.controllers.
func isV2(dir string) bool { return exists(dir, "cgroup.controllers") }

func filesOf(dir string) cgFiles {
	if isV2(dir) {
		return v2Files
	}
	return v1Files
}

func exists(dir, file string) bool {
	_, err := os.Stat(filepath.Join(dir, file))
	return err == nil
}

// v1Unlimited: v1 reports "no limit" as the largest page-aligned int64.
const v1Unlimited = math.MaxInt64 &^ 4095

// memoryLimit returns the memory limit of a cgroup in bytes; ok is false
// when there is none.
func memoryLimit(dir string) (limit int64, ok bool, err error) {
	name := filesOf(dir).MemoryLimit
	s, err := readTrim(dir, name)
	if err != nil {
		return 0, false, err
	}
	if s == "max" {
		return 0, false, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("%s/%s: bad value %q", dir, name, s)
	}
	if v >= v1Unlimited {
		return 0, false, nil
	}
	return v, true, nil
}

// oomKills returns how many processes the OOM killer killed in the
// cgroup: memory.events oom_kill (v2) or memory.oom_control oom_kill (v1,
// which has no memory.events).
func oomKills(dir string) (int64, error) {
	return keyed(dir, filesOf(dir).OOMCounter, "oom_kill")
}

// memoryUsage returns the cgroup's charged memory in bytes:
// memory.current (v2) or memory.usage_in_bytes (v1).
func memoryUsage(dir string) (int64, error) {
	name := "memory.usage_in_bytes"
	if isV2(dir) {
		name = "memory.current"
	}
	s, err := readTrim(dir, name)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(s, 10, 64)
}

// memoryBreakdown returns anonymous and page-cache bytes from
// memory.stat: anon/file on v2, rss/cache on v1 (the total_ variants
// include child cgroups on v1; a host's cgroup has none that matter, and
// the plain ones are what `cat memory.stat` shows first).
func memoryBreakdown(dir string) (anon, cache int64, err error) {
	anonKey, cacheKey := "rss", "cache"
	if isV2(dir) {
		anonKey, cacheKey = "anon", "file"
	}
	if anon, err = keyed(dir, "memory.stat", anonKey); err != nil {
		return 0, 0, err
	}
	cache, err = keyed(dir, "memory.stat", cacheKey)
	return anon, cache, err
}

// cpuThrottled returns cpu.stat's nr_throttled and the time throttled in
// microseconds (v2 throttled_usec; v1 throttled_time is nanoseconds).
func cpuThrottled(dir string) (periods, usec int64, err error) {
	if periods, err = keyed(dir, "cpu.stat", "nr_throttled"); err != nil {
		return 0, 0, err
	}
	if isV2(dir) {
		usec, err = keyed(dir, "cpu.stat", "throttled_usec")
		return periods, usec, err
	}
	ns, err := keyed(dir, "cpu.stat", "throttled_time")
	return periods, ns / 1000, err
}

// cpuQuota returns the CPU quota in cores; ok is false when unlimited.
func cpuQuota(dir string) (cores float64, ok bool, err error) {
	if isV2(dir) {
		s, err := readTrim(dir, "cpu.max")
		if err != nil {
			return 0, false, err
		}
		quota, period, _ := strings.Cut(s, " ")
		if quota == "max" {
			return 0, false, nil
		}
		q, err1 := strconv.ParseFloat(quota, 64)
		p, err2 := strconv.ParseFloat(period, 64)
		if err1 != nil || err2 != nil || p <= 0 {
			return 0, false, fmt.Errorf("%s/cpu.max: bad value %q", dir, s)
		}
		return q / p, true, nil
	}
	qs, err := readTrim(dir, "cpu.cfs_quota_us")
	if err != nil {
		return 0, false, err
	}
	ps, err := readTrim(dir, "cpu.cfs_period_us")
	if err != nil {
		return 0, false, err
	}
	q, err1 := strconv.ParseFloat(qs, 64)
	p, err2 := strconv.ParseFloat(ps, 64)
	if err1 != nil || err2 != nil || p <= 0 {
		return 0, false, fmt.Errorf("%s: bad cpu quota %q/%q", dir, qs, ps)
	}
	if q < 0 {
		return 0, false, nil
	}
	return q / p, true, nil
}

func readTrim(dir, file string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		return "", fmt.Errorf("read cgroup file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// errNoKey is returned when a keyed file lacks the key.
var errNoKey = errors.New("no such key")

// keyed reads one "key value" line of a flat-keyed cgroup file.
func keyed(dir, file, key string) (int64, error) {
	f, err := os.Open(filepath.Join(dir, file))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return 0, fmt.Errorf("cgroup file %s/%s: %w", dir, file, err)
		}
		return 0, fmt.Errorf("read cgroup file: %w", err)
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
	return 0, fmt.Errorf("%s/%s: %q: %w", dir, file, key, errNoKey)
}
