package labs_test

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/labctl/labctl/labs"
)

var update = flag.Bool("update", false, "rewrite testdata/bad*/*.want from the loader's output (review the diff!)")

// TestBadCorpus loads each bad lab and compares its errors, exactly, with
// the sibling .want file (one "line:col: message" per line).
func TestBadCorpus(t *testing.T) {
	// bad/ uses only real kinds (cmd/labctl runs it through the binary
	// too); bad-testkinds/ exercises params decoding on this package's
	// synthetic kinds.
	files, err := filepath.Glob("testdata/bad/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	more, err := filepath.Glob("testdata/bad-testkinds/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, more...)
	if len(files) < 35 {
		t.Errorf("bad corpus has %d files, want at least 35", len(files))
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".yaml"), func(t *testing.T) {
			l, err := labs.LoadFile(file)
			if err == nil {
				t.Fatalf("loaded %s (%q) without error, want errors", file, l.Name)
			}
			var list labs.ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("error is %T (%v), want labs.ErrorList", err, err)
			}
			var got []string
			for _, e := range list {
				if e.File != file {
					t.Errorf("error names file %q, want %q", e.File, file)
				}
				got = append(got, strings.TrimPrefix(e.Error(), file+":"))
			}
			wantFile := strings.TrimSuffix(file, ".yaml") + ".want"
			if *update {
				if err := os.WriteFile(wantFile, []byte(strings.Join(got, "\n")+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			data, err := os.ReadFile(wantFile)
			if err != nil {
				t.Fatal(err)
			}
			want := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("errors of %s (-want +got):\n%s", file, diff)
			}
		})
	}
}

// TestGoodCorpus loads each good lab: no error, and a few decoded values
// that prove the fields were read (not just tolerated).
func TestGoodCorpus(t *testing.T) {
	files, err := filepath.Glob("testdata/good/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no good corpus")
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".yaml"), func(t *testing.T) {
			l, err := labs.LoadFile(file)
			if err != nil {
				t.Fatalf("load %s: %v", file, err)
			}
			if l.File != file || len(l.Source) == 0 {
				t.Errorf("File=%q len(Source)=%d, want %q and the bytes", l.File, len(l.Source), file)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// TestGoodFullValues checks that every feature of testdata/good/full.yaml
// decoded to the values the file says, including the defaults the
// validator fills in.
func TestGoodFullValues(t *testing.T) {
	l, err := labs.LoadFile("testdata/good/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if l.Seed == nil || *l.Seed != 42 || l.Duration.D().String() != "1h30m0s" || l.Difficulty != labs.Advanced {
		t.Errorf("metadata: seed %v duration %v difficulty %q", l.Seed, l.Duration, l.Difficulty)
	}
	h := l.HostByName("app")
	wantHost := &labs.Host{
		Name: "app", Hostname: "batch-01", Init: labs.InitMini,
		Memory: ptr(labs.Size(64 << 20)), Pids: ptr(256), CPU: ptr(0.5),
		Files: []labs.File{
			{Path: "/etc/worker.conf", Content: "# written for {{ fact \"app.hostname\" }} (seed {{ fact \"instance.seed\" }})\nlimit = 64Mi\n", Mode: ptr(labs.Mode(0o640)), Owner: "root:adm"},
			{Path: "/usr/local/bin/run-worker", Content: "#!/bin/sh\nexec worker\n", Mode: ptr(labs.Mode(0o755))},
			{Path: "/srv/data/notes.txt", Content: "plain", Mode: ptr(labs.Mode(0o4755)), Owner: "1000"},
		},
		DNS: &labs.DNSConfig{
			Nameservers: []string{"192.0.2.53", "app"},
			Search:      []string{"lab.internal"},
			Options:     []string{"timeout:1", "attempts:2"},
			Hosts:       map[string]string{"db.lab.internal": "192.0.2.10", "self": "app"},
		},
	}
	if diff := cmp.Diff(wantHost, h); diff != "" {
		t.Errorf("host app (-want +got):\n%s", diff)
	}
	if len(l.Faults) != 3 || l.Faults[2].With != nil {
		t.Fatalf("faults: %+v", l.Faults)
	}
	with, ok := l.Faults[0].With.(*testFaultParams)
	if !ok {
		t.Fatalf("fault with is %T, want *testFaultParams", l.Faults[0].With)
	}
	wantWith := &testFaultParams{
		Process: "worker", Allocate: 256 << 20, Restart: labs.Duration(3e9), Mode: ptr(labs.Mode(0o600)),
		Args:   []string{"--config", "/etc/worker.conf"},
		Env:    map[string]string{"WORKER_ON": `{{ fact "app.hostname" }}`},
		Limits: &testLimits{Files: 1024, Note: `for {{ fact "instance.id" }}`},
	}
	if diff := cmp.Diff(wantWith, with); diff != "" {
		t.Errorf("fault hog with (-want +got):\n%s", diff)
	}
	// Defaults from NewParams survive when with does not set them.
	if w := l.Faults[1].With.(*testFaultParams); w.Allocate != 1<<20 || w.Restart != 0 {
		t.Errorf("second fault with = %+v", w)
	}
	if got := l.CheckByID("limit-short").Answer.Number; got == nil || got.Value != "64" {
		t.Errorf("number shorthand = %+v, want value 64", got)
	}
	if got := l.CheckByID("restart").Answer.Number; got.Value != "3s" || got.Tolerance != "500ms" {
		t.Errorf("restart number = %+v", got)
	}
	fixed := l.CheckByID("fixed")
	wantProbe := &labs.Probe{Kind: "test.cmd", Host: "app", Params: &testCmdParams{
		Argv: []string{"cat", "/sys/fs/cgroup/memory.events"}, Exit: ptr(0), Stdout: "oom_kill 0", Timeout: labs.Duration(2e9),
	}}
	if diff := cmp.Diff(wantProbe, fixed.Probe); diff != "" {
		t.Errorf("probe of fixed (-want +got):\n%s", diff)
	}
	if fixed.StableFor == nil || *fixed.StableFor != labs.Duration(10e9) || len(fixed.Needs) != 2 {
		t.Errorf("fixed: stable_for %v needs %v", fixed.StableFor, fixed.Needs)
	}
	if p := l.CheckByID("still-there").Probe.Params.(*testCmdParams); p.Timeout != labs.Duration(10e9) || p.Exit != nil {
		t.Errorf("probe defaults lost: %+v", p)
	}
	if w := l.CheckByID("waited"); w.Probe.Host != "" || w.Broken == nil || *w.Broken {
		t.Errorf("host-less probe: host %q broken %v", w.Probe.Host, w.Broken)
	}
	wantHints := []labs.Hint{
		{Text: "Who decides to kill a process when memory runs out? Look at the kernel log."},
		{Text: `The cgroup of {{ fact "app.hostname" }} has a memory limit.`, After: ptr(labs.Duration(120e9))},
		{Text: "`dmesg | grep -i oom`", After: ptr(labs.Duration(30e9)), WhenFailing: []string{"victim", "log"}},
	}
	if diff := cmp.Diff(wantHints, l.Hints); diff != "" {
		t.Errorf("hints (-want +got):\n%s", diff)
	}
	// Steps without a host get the only host.
	if s := l.Solution.Run[0]; s.Host != "app" || s.Sh == "" {
		t.Errorf("solution step 0 = %+v", s)
	}
	if s := l.Solution.Run[1]; s.Timeout == nil || *s.Timeout != labs.Duration(5e9) || len(s.Argv) != 3 {
		t.Errorf("solution step 1 = %+v", s)
	}
	if l.Solution.Answers["limit-short"] != "64" || len(l.Solution.Answers) != 10 {
		t.Errorf("solution answers = %v", l.Solution.Answers)
	}
	if w := l.WrongFixes[0]; w.Run[0].Host != "app" || len(w.Fails) != 1 {
		t.Errorf("wrong fix = %+v", w)
	}
	if !labs.MatchHash(l.CheckByID("secret").Answer.Hash, "Swordfish", false) {
		t.Error("the hash in full.yaml does not match its solution")
	}
}

// TestGoodNetworkValues checks links, routes and merge keys.
func TestGoodNetworkValues(t *testing.T) {
	l, err := labs.LoadFile("testdata/good/network.yaml")
	if err != nil {
		t.Fatal(err)
	}
	wantLinks := []labs.Link{
		{A: "client", B: "router", Subnet: "10.9.1.0/24", AAddr: "10.9.1.10", BAddr: "10.9.1.1"},
		{A: "router", B: "server", Subnet: "10.9.2.0/30"},
		{A: "client", B: "server"},
	}
	if diff := cmp.Diff(wantLinks, l.Links); diff != "" {
		t.Errorf("links (-want +got):\n%s", diff)
	}
	var names []string
	for _, h := range l.Hosts {
		names = append(names, h.Name)
	}
	if diff := cmp.Diff([]string{"client", "router", "server"}, names); diff != "" {
		t.Errorf("host order (-want +got):\n%s", diff)
	}
	if r := l.HostByName("client").Routes; len(r) != 1 || r[0] != (labs.Route{To: "default", Via: "router"}) {
		t.Errorf("client routes = %+v", r)
	}
	if !l.HostByName("router").Forward {
		t.Error("router does not forward")
	}
	// The second probe merges the first and overrides argv and timeout.
	dns := l.CheckByID("dns").Probe
	want := &labs.Probe{Kind: "test.cmd", Host: "client", Params: &testCmdParams{Argv: []string{"getent", "hosts", "server"}, Timeout: labs.Duration(1e9)}}
	if diff := cmp.Diff(want, dns); diff != "" {
		t.Errorf("merged probe (-want +got):\n%s", diff)
	}
}
