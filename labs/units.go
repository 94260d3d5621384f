package labs

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Size is a byte count. In YAML: a plain integer (bytes) or a number with a
// binary (Ki, Mi, Gi, Ti) or decimal (k, K, M, G, T) suffix, optionally
// followed by B: 64Mi, 1G, 512KiB, 1.5Gi.
type Size int64

// ParseSize parses a size such as 64Mi, 1G or 67108864.
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	t = strings.TrimSuffix(t, "B")
	t = strings.TrimSpace(t)
	mult := float64(1)
	for _, u := range []struct {
		suffix string
		mult   float64
	}{
		{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40},
		{"k", 1e3}, {"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12},
	} {
		if strings.HasSuffix(t, u.suffix) {
			t = strings.TrimSpace(strings.TrimSuffix(t, u.suffix))
			mult = u.mult
			break
		}
	}
	if t == "" {
		return 0, fmt.Errorf("invalid size %q: want a number with an optional unit, e.g. 64Mi, 1G, 4096", s)
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, fmt.Errorf("invalid size %q: want a number with an optional unit, e.g. 64Mi, 1G, 4096", s)
	}
	v := f * mult
	if v > math.MaxInt64/2 {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	return Size(int64(v)), nil
}

// String formats the size with the largest exact binary unit.
func (s Size) String() string {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"Ti", 1 << 40}, {"Gi", 1 << 30}, {"Mi", 1 << 20}, {"Ki", 1 << 10}} {
		if s != 0 && int64(s)%u.mult == 0 {
			return strconv.FormatInt(int64(s)/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(s), 10)
}

// Duration is a time.Duration written as 10s, 5m, 1h30m, 250ms.
type Duration time.Duration

// ParseDuration parses a Go duration string; a bare 0 is allowed.
func ParseDuration(s string) (Duration, error) {
	t := strings.TrimSpace(s)
	if t == "0" {
		return 0, nil
	}
	d, err := time.ParseDuration(t)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("invalid duration %q: want e.g. 10s, 5m, 1h30m", s)
	}
	return Duration(d), nil
}

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats like time.Duration without zero tails: 10m, 1h30m, 2.5s.
func (d Duration) String() string {
	s := time.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// Mode is a file mode's permission bits, written in octal (0644, "0755", 4755).
type Mode uint32

// ParseMode parses octal permission bits, including setuid/setgid/sticky.
func ParseMode(s string) (Mode, error) {
	t := strings.TrimPrefix(strings.TrimSpace(s), "0o")
	v, err := strconv.ParseUint(t, 8, 32)
	if err != nil || v > 07777 {
		return 0, fmt.Errorf("invalid mode %q: want octal permission bits, e.g. 0644 or 4755", s)
	}
	return Mode(v), nil
}

func (m Mode) String() string { return fmt.Sprintf("%04o", uint32(m)) }
