package checks

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/labctl/labctl/labs"
)

// fileTarget is a target with one host, "app", whose filesystem is a
// temporary directory holding the file "ok"; no namespaces needed.
func fileTarget(t *testing.T) (*testTarget, string) {
	t.Helper()
	root := t.TempDir()
	ok := filepath.Join(root, "ok")
	if err := os.WriteFile(ok, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(ok, 0o644); err != nil { // whatever the umask
		t.Fatal(err)
	}
	tt := newTestTarget()
	tt.hosts["app"] = &testHost{root: root}
	tt.facts["hog.victim"] = "worker"
	tt.facts["ok.name"] = "ok"
	return tt, root
}

func fileCheck(id, path string, needs ...string) labs.Check {
	return labs.Check{ID: id, Probe: &labs.Probe{Kind: "file", Params: &FileParams{Path: path, Exists: ptr(true)}}, Needs: needs}
}

func answerCheck(id string, m labs.Matcher, needs ...string) labs.Check {
	return labs.Check{ID: id, Ask: "?", Answer: &m, Needs: needs}
}

func testLab(checks ...labs.Check) *labs.Lab {
	return &labs.Lab{Name: "test", Hosts: labs.Hosts{{Name: "app"}}, Checks: checks}
}

// brief is the part of an outcome these tests compare.
type brief struct{ ID, Kind, Status string }

func briefs(out []Outcome) []brief {
	var b []brief
	for _, o := range out {
		b = append(b, brief{o.ID, o.Kind, o.Status})
	}
	return b
}

func TestRunNeeds(t *testing.T) {
	lab := testLab(
		answerCheck("victim", labs.Matcher{Equals: "{{ fact `hog.victim` }}"}),
		answerCheck("limit", labs.Matcher{Number: &labs.Number{Value: "64Mi"}}),
		fileCheck("present", "/ok", "victim"),
		fileCheck("after", "/ok", "present"),
		fileCheck("missing", "/nope"),
		fileCheck("gated", "/ok", "missing"),
	)
	tests := []struct {
		name    string
		answers map[string]string
		want    []brief
	}{
		{"right answer unblocks", map[string]string{"victim": "Worker"}, []brief{
			{"victim", "answer", "pass"},
			{"limit", "answer", "unanswered"},
			{"present", "probe", "pass"},
			{"after", "probe", "pass"},
			{"missing", "probe", "fail"},
			{"gated", "probe", "blocked"},
		}},
		{"wrong answer blocks transitively", map[string]string{"victim": "api", "limit": "67108864"}, []brief{
			{"victim", "answer", "fail"},
			{"limit", "answer", "pass"},
			{"present", "probe", "blocked"},
			{"after", "probe", "blocked"},
			{"missing", "probe", "fail"},
			{"gated", "probe", "blocked"},
		}},
	}
	for _, tc := range tests {
		for _, seq := range []bool{false, true} {
			t.Run(tc.name+map[bool]string{false: " concurrent", true: " sequential"}[seq], func(t *testing.T) {
				tt, _ := fileTarget(t)
				out := Run(context.Background(), lab, tt, tc.answers, nil, RunOptions{Sequential: seq})
				if diff := cmp.Diff(tc.want, briefs(out)); diff != "" {
					t.Errorf("outcomes (-want +got):\n%s", diff)
				}
				for _, o := range out {
					if o.Status == StatusBlocked && o.ID == "gated" && !strings.Contains(o.Message, "missing") {
						t.Errorf("blocked message %q does not name what it waits for", o.Message)
					}
				}
			})
		}
	}
}

func TestRunOnly(t *testing.T) {
	lab := testLab(
		answerCheck("victim", labs.Matcher{Equals: "worker"}),
		fileCheck("present", "/ok", "victim"),
		fileCheck("other", "/ok"),
	)
	tt, _ := fileTarget(t)
	out := Run(context.Background(), lab, tt, map[string]string{"victim": "api"}, []string{"present", "nosuch"}, RunOptions{})
	want := []brief{{"present", "probe", "blocked"}, {"nosuch", "", "fail"}}
	if diff := cmp.Diff(want, briefs(out)); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
	if tt.rootPathCalls != 0 {
		t.Errorf("%d probes ran; none should (present is blocked, other not asked for)", tt.rootPathCalls)
	}
}

func TestRunNeedsCycle(t *testing.T) {
	lab := testLab(
		fileCheck("a", "/ok", "b"),
		fileCheck("b", "/ok", "a"),
		fileCheck("c", "/ok"),
		fileCheck("d", "/ok", "a"),
	)
	for _, seq := range []bool{false, true} {
		tt, _ := fileTarget(t)
		out := Run(context.Background(), lab, tt, nil, nil, RunOptions{Sequential: seq})
		want := []brief{{"a", "probe", "blocked"}, {"b", "probe", "blocked"}, {"c", "probe", "pass"}, {"d", "probe", "blocked"}}
		if diff := cmp.Diff(want, briefs(out)); diff != "" {
			t.Errorf("sequential=%v outcomes (-want +got):\n%s", seq, diff)
		}
	}
}

func TestRunRendersACopy(t *testing.T) {
	templ := "/{{ fact `ok.name` }}"
	lab := testLab(
		fileCheck("templated", templ),
		fileCheck("unknown fact", "/{{ fact `nope` }}"),
	)
	tt, _ := fileTarget(t)
	out := Run(context.Background(), lab, tt, nil, nil, RunOptions{})
	want := []brief{{"templated", "probe", "pass"}, {"unknown fact", "probe", "fail"}}
	if diff := cmp.Diff(want, briefs(out)); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
	if !strings.Contains(out[1].Message, "nope") {
		t.Errorf("message %q does not name the missing fact", out[1].Message)
	}
	if got := lab.Checks[0].Probe.Params.(*FileParams).Path; got != templ {
		t.Errorf("the lab's params were rendered in place: path is now %q", got)
	}
}

func TestStableForSteady(t *testing.T) {
	tt, _ := fileTarget(t)
	c := fileCheck("steady", "/ok")
	c.StableFor = ptr(labs.Duration(300 * time.Millisecond))
	out := Run(context.Background(), testLab(c), tt, nil, nil, RunOptions{})
	if out[0].Status != StatusPass {
		t.Fatalf("steady file: %+v", out[0])
	}
	// Looks at 0, 100, 200 and 300 ms at least: it did watch, not glance.
	if tt.rootPathCalls < 4 {
		t.Errorf("observed %d times over the window, want at least 4", tt.rootPathCalls)
	}
}

func TestStableForFlapping(t *testing.T) {
	tt, root := fileTarget(t)
	path := filepath.Join(root, "ok")
	// A flapping fix: a goroutine removes and recreates the file. It
	// moves in step with the probe's looks (each look hands it the turn
	// while resolving the path, before the stat), so the flap is certain
	// to be seen without relying on timing: looks 1-3 see the file,
	// look 4 sees it gone, look 5 would see it back.
	turns := make(chan int)
	toggled := make(chan struct{})
	go func() {
		for look := range turns {
			switch look % 4 {
			case 0:
				os.Remove(path)
			case 1:
				os.WriteFile(path, nil, 0o644)
			}
			toggled <- struct{}{}
		}
	}()
	defer close(turns)
	tt.afterRootPath = func(look int) {
		turns <- look
		<-toggled
	}
	c := fileCheck("flappy", "/ok")
	c.StableFor = ptr(labs.Duration(2 * time.Second))
	out := Run(context.Background(), testLab(c), tt, nil, nil, RunOptions{})
	o := out[0]
	if o.Status != StatusFail {
		t.Fatalf("flapping file passed: %+v", o)
	}
	if !strings.Contains(o.Message, "flipped") {
		t.Errorf("message %q does not say the state flipped", o.Message)
	}
	if tt.rootPathCalls != 4 {
		t.Errorf("failed after %d looks, want 4 (fail fast on the first failing look)", tt.rootPathCalls)
	}
}

func TestStableForFailsAtOnce(t *testing.T) {
	tt, _ := fileTarget(t)
	c := fileCheck("absent", "/nope")
	c.StableFor = ptr(labs.Duration(time.Hour))
	out := Run(context.Background(), testLab(c), tt, nil, nil, RunOptions{})
	if out[0].Status != StatusFail || tt.rootPathCalls != 1 {
		t.Errorf("got %+v after %d looks; want a failure at the first look", out[0], tt.rootPathCalls)
	}
	if strings.Contains(out[0].Message, "flipped") {
		t.Errorf("message %q claims a flip that never happened", out[0].Message)
	}
}

func TestStableInterval(t *testing.T) {
	for window, want := range map[time.Duration]time.Duration{
		200 * time.Millisecond: 100 * time.Millisecond,
		5 * time.Second:        500 * time.Millisecond,
		time.Minute:            time.Second,
	} {
		if got := stableInterval(window); got != want {
			t.Errorf("stableInterval(%s) = %s, want %s", window, got, want)
		}
	}
}
