//go:build linux

package sandbox

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkStartStop measures one host's Start plus Stop, and reports the
// resident memory of its init (what every host costs while a lab runs).
func BenchmarkStartStop(b *testing.B) {
	requireRoot(b)
	ctx := context.Background()
	var rssKiB int64
	var startTotal time.Duration
	for i := 0; i < b.N; i++ {
		spec := testSpec(b)
		t0 := time.Now()
		h, err := Start(ctx, spec, nil)
		startTotal += time.Since(t0)
		if err != nil {
			b.Fatal(err)
		}
		if i == 0 {
			rssKiB = vmRSS(b, h.InitPID)
		}
		if err := Stop(ctx, h); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(rssKiB), "init-RSS-KiB")
	b.ReportMetric(float64(startTotal.Milliseconds())/float64(b.N), "start-ms/op")
}

func vmRSS(b *testing.B, pid int) int64 {
	status := mustRead(b, fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	b.Fatal("no VmRSS")
	return 0
}
