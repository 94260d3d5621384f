// Package testenv holds conventions shared by the project's privileged
// tests.
package testenv

import (
	"os"
	"strconv"
	"testing"
)

// SelfTestRuns is how many times a fault family's tests put each of its
// labs through labctl test's phases: $LABCTL_REPEAT (e.g. 3 for an
// acceptance run). By default it is 0 and the caller skips: `make test`
// already runs `labctl test` on the whole catalog once, so CI does not
// test every lab twice.
func SelfTestRuns(t testing.TB) int {
	t.Helper()
	v := os.Getenv("LABCTL_REPEAT")
	if v == "" {
		t.Skip("the catalog self-test of make test covers each lab once; set LABCTL_REPEAT=N to repeat here")
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("LABCTL_REPEAT=%q: want a positive number", v)
	}
	return n
}
