package main

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labctl/labctl/internal/hostsnap"
	"github.com/labctl/labctl/runner"
)

// DensityStep is N single-host instances up at the same time.
type DensityStep struct {
	N       int     `json:"n"`
	Up      int     `json:"up"` // instances that came up
	UpWallS float64 `json:"up_wall_s"`
	// DownWallS is the time to take all N down again.
	DownWallS float64 `json:"down_wall_s"`
	// MemPerInstanceMiB is the drop of MemAvailable while all N run,
	// divided by N: what an instance costs the machine (kernel included).
	MemPerInstanceMiB float64 `json:"mem_per_instance_mib"`
	// Per host: resident and proportional set size of labctl's own
	// processes in the host (its init), and their thread count.
	RSSPerHostMiB   float64 `json:"labctl_rss_per_host_mib"`
	PSSPerHostMiB   float64 `json:"labctl_pss_per_host_mib"`
	ThreadsPerHost  float64 `json:"labctl_threads_per_host"`
	LabctlProcesses int     `json:"labctl_processes"`
	Error           string  `json:"error,omitempty"` // why it stopped here
	Residue         string  `json:"residue,omitempty"`
}

func measureDensity(cfg config, counts []int, parallel int, before *hostsnap.Snapshot) []DensityStep {
	var steps []DensityStep
	for _, n := range counts {
		st := densityStep(cfg, n, parallel, before)
		steps = append(steps, st)
		fmt.Fprintf(os.Stderr, "density N=%d: %d up in %.1fs, down in %.1fs, %.1f MiB/instance %s\n",
			n, st.Up, st.UpWallS, st.DownWallS, st.MemPerInstanceMiB, st.Error)
		if st.Error != "" || st.Residue != "" {
			break // stop early and report where and why
		}
	}
	return steps
}

func densityStep(cfg config, n, parallel int, before *hostsnap.Snapshot) DensityStep {
	st := DensityStep{N: n}
	name := func(i int) string { return fmt.Sprintf("bench-d%d-%d", n, i) }
	memBefore, _ := meminfo("MemAvailable")

	start := time.Now()
	up := make([]bool, n)
	var mu sync.Mutex
	var firstErr string
	forEach(n, parallel, func(i int) bool {
		_, err := timed(cfg.labctl, "up", "--name", name(i), labSingle)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			if firstErr == "" {
				firstErr = fmt.Sprintf("instance %d of %d: %v", i+1, n, err)
			}
			return false
		}
		up[i] = true
		return firstErr == ""
	})
	st.UpWallS = time.Since(start).Seconds()
	for _, ok := range up {
		if ok {
			st.Up++
		}
	}
	st.Error = firstErr
	if firstErr == "" {
		time.Sleep(2 * time.Second) // let page cache and slab settle before reading memory
		if memAfter, err := meminfo("MemAvailable"); err == nil {
			st.MemPerInstanceMiB = round1(float64(memBefore-memAfter) / 1024 / float64(n))
		}
		rss, pss, threads, procs := labctlInitUsage()
		st.LabctlProcesses = procs
		st.RSSPerHostMiB = round1(float64(rss) / 1024 / float64(n))
		st.PSSPerHostMiB = round1(float64(pss) / 1024 / float64(n))
		st.ThreadsPerHost = round1(float64(threads) / float64(n))
	}

	start = time.Now()
	forEach(n, parallel, func(i int) bool {
		if up[i] {
			if _, err := timed(cfg.labctl, "down", name(i)); err != nil {
				mu.Lock()
				if st.Error == "" {
					st.Error = "down: " + err.Error()
				}
				mu.Unlock()
			}
		}
		return true
	})
	st.DownWallS = time.Since(start).Seconds()
	_, _ = timed(cfg.labctl, "gc") // whatever a failed up left
	if diff, err := runner.SettledDiff(before); err != nil || diff != "" {
		st.Residue = fmt.Sprint(diff, err)
	}
	return st
}

// forEach calls fn(0..n-1) with at most parallel calls at once, and stops
// starting new ones once fn returns false.
func forEach(n, parallel int, fn func(int) bool) {
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	var mu sync.Mutex
	stop := false
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		mu.Lock()
		if stop {
			mu.Unlock()
			<-sem
			break
		}
		mu.Unlock()
		wg.Add(1)
		go func(i int) {
			defer func() { <-sem; wg.Done() }()
			if !fn(i) {
				mu.Lock()
				stop = true
				mu.Unlock()
			}
		}(i)
	}
	wg.Wait()
}

// labctlInitUsage sums VmRSS, Pss (kB) and threads of every labctl-init,
// the only labctl process in a first-look host.
func labctlInitUsage() (rssKB, pssKB, threads int64, procs int) {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		comm, err := os.ReadFile(filepath.Join(d, "comm"))
		if err != nil || strings.TrimSpace(string(comm)) != "labctl-init" {
			continue
		}
		procs++
		rssKB += statusField(filepath.Join(d, "status"), "VmRSS:")
		threads += statusField(filepath.Join(d, "status"), "Threads:")
		pssKB += statusField(filepath.Join(d, "smaps_rollup"), "Pss:")
	}
	return
}

// statusField reads the number after key in a /proc key-value file.
func statusField(path, key string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key); ok {
			fields := strings.Fields(v)
			if len(fields) > 0 {
				n, _ := strconv.ParseInt(fields[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// meminfo returns a /proc/meminfo value in kB.
func meminfo(key string) (int64, error) {
	n := statusField("/proc/meminfo", key+":")
	if n == 0 {
		return 0, fmt.Errorf("no %s in /proc/meminfo", key)
	}
	return n, nil
}

func round1(v float64) float64 { return math.Round(v*10) / 10 }
