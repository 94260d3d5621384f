// Package testenv holds conventions shared by the project's privileged
// tests.
package testenv

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/labctl/labctl/labs"
	"github.com/labctl/labctl/runner"
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

// RequireLabs skips the test unless it runs as root on a machine that
// can run labs; needs says what the test does that needs it. Under CI
// (CI=true), which runs as root on a machine that can, it fails instead:
// a privileged test must not pass there by skipping.
func RequireLabs(t testing.TB, needs string) {
	t.Helper()
	skip := t.Skipf
	if os.Getenv("CI") == "true" {
		skip = t.Fatalf
	}
	if os.Geteuid() != 0 {
		skip("needs root: %s (CI runs as root)", needs)
		return
	}
	if err := runner.CheckEnvironment(); err != nil {
		skip("this machine cannot run labs: %v", err)
	}
}

// PrivateStateRoot keeps the test's instances (and its gc) apart from
// anyone else's on the machine: runner's state goes to a fresh directory,
// returned. At cleanup it downs whatever a failed test left there and
// collects dead instances.
func PrivateStateRoot(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv(runner.EnvStateDir, dir)
	t.Cleanup(func() {
		all, _ := runner.List()
		for _, in := range all {
			if err := in.Down(context.Background()); err != nil {
				t.Errorf("cleanup: down %s: %v", in.ID, err)
			}
		}
		if _, err := runner.GC(context.Background()); err != nil {
			t.Errorf("cleanup: gc: %v", err)
		}
	})
	return dir
}

// LoadLab loads a lab file, failing the test if it does not load.
func LoadLab(t testing.TB, file string) *labs.Lab {
	t.Helper()
	lab, err := labs.LoadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return lab
}

// CatalogLab loads the catalog lab labs/<topic>/<name>.yaml from a test
// of a package two levels below the repository (faults/<family>).
func CatalogLab(t testing.TB, topic, name string) *labs.Lab {
	t.Helper()
	return LoadLab(t, filepath.Join("..", "..", "labs", topic, name+".yaml"))
}
