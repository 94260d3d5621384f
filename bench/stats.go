package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// Series summarises repeated measurements of one duration.
type Series struct {
	Runs      int       `json:"runs"`
	MedianMS  float64   `json:"median_ms"`
	P95MS     float64   `json:"p95_ms"`
	MinMS     float64   `json:"min_ms"`
	MaxMS     float64   `json:"max_ms"`
	SamplesMS []float64 `json:"samples_ms"`
}

// summarize uses nearest-rank percentiles: every reported value is one
// that was measured.
func summarize(d []time.Duration) Series {
	s := Series{Runs: len(d)}
	if len(d) == 0 {
		return s
	}
	for _, x := range d {
		s.SamplesMS = append(s.SamplesMS, ms(x))
	}
	sorted := slices.Clone(s.SamplesMS)
	slices.Sort(sorted)
	s.MedianMS = percentile(sorted, 50)
	s.P95MS = percentile(sorted, 95)
	s.MinMS, s.MaxMS = sorted[0], sorted[len(sorted)-1]
	return s
}

// percentile returns the nearest-rank p-th percentile of sorted values.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[max(rank, 1)-1]
}

func ms(d time.Duration) float64 { return math.Round(float64(d.Microseconds())) / 1000 }

// ratio is a/b, 0 when b is 0 (nothing to compare with).
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return math.Round(a/b*100) / 100
}

// table renders a Markdown table.
func table(header []string, rows [][]string) string {
	var b strings.Builder
	line := func(cells []string) { b.WriteString("| " + strings.Join(cells, " | ") + " |\n") }
	line(header)
	sep := make([]string, len(header))
	for i := range sep {
		sep[i] = "---"
	}
	line(sep)
	for _, r := range rows {
		line(r)
	}
	return b.String()
}

func fmtMS(v float64) string {
	if v >= 100 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

func fmtRatio(v float64) string {
	if v == 0 {
		return "–"
	}
	s := fmt.Sprintf("%.2f×", v)
	if v > 1.5 {
		s = "**" + s + "**"
	}
	return s
}
