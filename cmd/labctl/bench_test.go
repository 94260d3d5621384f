package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/labctl/labctl/labs"
	"github.com/labctl/labctl/runner"
)

// BenchmarkDefaultLab measures the README's default lab: up to ready
// (hosts made, faults observable), down, and the resident memory of one
// host's init. It measures; it asserts nothing about time.
func BenchmarkDefaultLab(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("labs need root (namespaces, cgroups)")
	}
	lab, err := labs.Resolve("first-look", nil)
	if err != nil {
		b.Fatal(err)
	}
	var ups, downs []time.Duration
	var rss []int
	for b.Loop() {
		start := time.Now()
		in, err := runner.Up(context.Background(), lab, runner.UpOptions{Name: "bench-default"})
		if err != nil {
			b.Fatal(err)
		}
		ready := time.Now()
		if kb, err := vmRSS(in.Hosts[0].InitPID); err == nil {
			rss = append(rss, kb)
		}
		if err := in.Down(context.Background()); err != nil {
			b.Fatal(err)
		}
		ups = append(ups, ready.Sub(start))
		downs = append(downs, time.Since(ready))
	}
	b.ReportMetric(ms(medianOf(ups)), "up-ms/median")
	b.ReportMetric(ms(medianOf(downs)), "down-ms/median")
	if len(rss) > 0 {
		slices.Sort(rss)
		b.ReportMetric(float64(rss[len(rss)/2])/1024, "init-rss-MiB/median")
	}
}

func medianOf(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// vmRSS reads VmRSS (kB) from /proc/PID/status.
func vmRSS(pid int) (int, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	return 0, fmt.Errorf("no VmRSS for %d", pid)
}
