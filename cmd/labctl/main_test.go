package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rogpeppe/go-internal/testscript"

	"github.com/labctl/labctl/internal/hostsnap"
	"github.com/labctl/labctl/internal/reexec"
	"github.com/labctl/labctl/labs"
	"github.com/labctl/labctl/labtest"
)

func TestMain(m *testing.M) {
	// The test binary doubles as labctl: re-exec'd helpers (a host's init,
	// a broken service) run from it too.
	if reexec.Init() {
		return
	}
	testscript.Main(m, map[string]func(){
		"labctl": func() { os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) },
	})
}

func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		RequireUniqueNames:  true,
		UpdateScripts:       os.Getenv("UPDATE_SCRIPTS") != "",
		Cmds:                scriptCmds(),
		Condition:           labtest.Condition,
		Setup: func(env *testscript.Env) error {
			// Scripts compare whole-machine snapshots, so one runs at a time.
			scriptMu.Lock()
			env.Defer(scriptMu.Unlock)
			root, err := filepath.Abs("../..")
			if err != nil {
				return err
			}
			env.Setenv("REPO", root)
			env.Setenv("LABS", filepath.Join(root, "labs"))
			// Lab state of script tests stays apart from a developer's labs.
			env.Setenv("LABCTL_BIN", "labctl")
			// Markers drawn per run, so that no file on the machine (this
			// repository included) holds them except the instance's state.
			env.Setenv("SECRET_SEED", strconv.FormatInt(1_000_000_000+rand.Int64N(8_000_000_000), 10))
			env.Setenv("SECRET_WORD", fmt.Sprintf("sekret-%016x", rand.Uint64()))
			env.Setenv("SECRET_ANSWER", fmt.Sprintf("guess-%016x", rand.Uint64()))
			return nil
		},
	})
}

var scriptMu sync.Mutex

// scriptCmds are labtest's commands plus snapshot/cmpsnapshot, which prove
// that what a script did left nothing on the machine.
func scriptCmds() map[string]func(ts *testscript.TestScript, neg bool, args []string) {
	cmds := labtest.Cmds()
	cmds["nobodybin"] = nobodyBin
	cmds["snapshot"] = func(ts *testscript.TestScript, neg bool, args []string) {
		if neg || len(args) != 1 {
			ts.Fatalf("usage: snapshot NAME")
		}
		snap, err := hostsnap.Take()
		ts.Check(err)
		data, err := json.Marshal(snap)
		ts.Check(err)
		ts.Check(os.WriteFile(ts.MkAbs(".snapshot-"+args[0]+".json"), data, 0o644))
	}
	// nochange NAME: the machine is back to snapshot NAME. The kernel and
	// the machine's init finish some cleanup (reaping a killed host's init)
	// just after labctl returns, so it waits for equality, with a deadline.
	cmds["nochange"] = func(ts *testscript.TestScript, neg bool, args []string) {
		if neg || len(args) != 1 {
			ts.Fatalf("usage: nochange SNAPSHOT")
		}
		data, err := os.ReadFile(ts.MkAbs(".snapshot-" + args[0] + ".json"))
		ts.Check(err)
		var before hostsnap.Snapshot
		ts.Check(json.Unmarshal(data, &before))
		diff := ""
		for deadline := time.Now().Add(15 * time.Second); ; {
			after, err := hostsnap.Take()
			ts.Check(err)
			if diff = hostsnap.Diff(&before, after); diff == "" || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond) // poll interval, not a readiness guess
		}
		if diff != "" {
			ts.Fatalf("the machine changed (-%s +now):\n%s", args[0], diff)
		}
	}
	return cmds
}

// TestSchemaCommitted fails when docs/lab-schema.json no longer matches the
// format's Go types and the kinds linked into labctl (run `make schema`).
func TestSchemaCommitted(t *testing.T) {
	want, err := labs.Schema()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("../../docs/lab-schema.json")
	if err != nil {
		t.Fatalf("%v (generate it with: make schema)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("docs/lab-schema.json is stale; run `make schema` (-generated +committed):\n%s", diff)
	}
}

// TestBadCorpus runs `labctl validate` on every file of the loader's bad
// corpus: exit 2 and exactly the expected file:line:col messages.
func TestBadCorpus(t *testing.T) {
	files, err := filepath.Glob("../../labs/testdata/bad/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 30 {
		t.Fatalf("bad corpus has %d files, want at least 30", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			wantData, err := os.ReadFile(strings.TrimSuffix(f, ".yaml") + ".want")
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, line := range strings.Split(strings.TrimSpace(string(wantData)), "\n") {
				want = append(want, f+":"+line)
			}
			var stdout, stderr bytes.Buffer
			code := run([]string{"validate", f}, nil, &stdout, &stderr)
			if code != exitUsage {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, exitUsage, stderr.String())
			}
			got := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
		})
	}
}

// TestListJSON: `labctl list --json` is valid JSON naming every lab file of
// the catalog directory.
func TestListJSON(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"list", "--json"}, nil, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	var entries []labSummary
	if err := json.Unmarshal(stdout.Bytes(), &entries); err != nil {
		t.Fatalf("list --json is not JSON: %v\n%s", err, stdout.String())
	}
	files, err := filepath.Glob("../../labs/*/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var wantNames, gotNames []string
	for _, f := range files {
		l, err := labs.LoadFile(f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		wantNames = append(wantNames, l.Name)
	}
	for _, e := range entries {
		gotNames = append(gotNames, e.Name)
	}
	less := func(a, b string) bool { return a < b }
	if diff := cmp.Diff(wantNames, gotNames, cmpSort(less)); diff != "" {
		t.Errorf("list --json names (-files +listed):\n%s", diff)
	}
}

// TestAuthorExampleInDocs: the lab author's example in docs/testing-labs.md
// is the script TestScripts runs, so the documented example cannot rot.
func TestAuthorExampleInDocs(t *testing.T) {
	script, err := os.ReadFile("testdata/script/author-example.txtar")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../../docs/testing-labs.md")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(doc, append(append([]byte("```\n"), script...), "```\n"...)) {
		t.Errorf("docs/testing-labs.md does not quote testdata/script/author-example.txtar verbatim in a code block; copy it over")
	}
}
