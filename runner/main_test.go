package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/labctl/labctl/faults"
	"github.com/labctl/labctl/internal/hostsnap"
	"github.com/labctl/labctl/internal/reexec"
	"github.com/labctl/labctl/labs"
)

// Environment of the crash helper: the test binary re-executed runs Up
// and, with envKillAt, SIGKILLs itself right after that ledger record.
const (
	envHelperUp = "LABCTL_TEST_HELPER_UP"   // lab to bring up: "one" or "crash"
	envKillAt   = "LABCTL_TEST_KILL_AT_SEQ" // SIGKILL after this ledger record
)

func TestMain(m *testing.M) {
	// Host inits and enter helpers are this binary re-executed.
	if reexec.Init() {
		return
	}
	if which := os.Getenv(envHelperUp); which != "" {
		os.Exit(crashHelper(which))
	}
	os.Exit(m.Run())
}

// crashHelper is the child of the crash tests: it brings a lab up and
// exits, unless it is killed first.
func crashHelper(which string) int {
	if n, err := strconv.Atoi(os.Getenv(envKillAt)); err == nil {
		ledgerAppended = func(seq int) {
			if seq == n {
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
			}
		}
	}
	lab := oneHostLab()
	if which == "crash" {
		lab = crashLab()
	}
	if _, err := Up(context.Background(), lab, UpOptions{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates namespaces, cgroups and veth links (CI runs as root)")
	}
	if err := CheckEnvironment(); err != nil {
		t.Skipf("this machine cannot run labs: %v", err)
	}
}

// privateStateRoot gives the test its own state root, so its gc never
// touches another test's or a user's labs.
func privateStateRoot(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv(EnvStateDir, dir)
	// A failed test must not leave its labs running for the next one.
	t.Cleanup(func() {
		all, _ := List()
		for _, in := range all {
			if err := in.Down(context.Background()); err != nil {
				t.Errorf("cleanup: down %s: %v", in.ID, err)
			}
		}
		if _, err := GC(context.Background()); err != nil {
			t.Errorf("cleanup: gc: %v", err)
		}
	})
	return dir
}

func snapshot(t testing.TB) *hostsnap.Snapshot {
	t.Helper()
	s, err := hostsnap.Take()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// requireNoResidue compares the machine with the snapshot before the test.
//
// Other packages' tests may run labs on this machine at the same time
// (go test runs packages in parallel), so entries that name another state
// root's instances, or another test binary, are left out of both sides.
func requireNoResidue(t testing.TB, before *hostsnap.Snapshot) {
	t.Helper()
	keep := ownEntries()
	if d := hostsnap.Diff(hostsnap.Filter(before, keep), hostsnap.Filter(snapshot(t), keep)); d != "" {
		t.Fatalf("the machine changed (-before +after):\n%s", d)
	}
}

// labctlIDs finds instance ids in names such as labctl-<id>-app and
// /labctl/<id>/app.
var labctlIDs = regexp.MustCompile(`labctl[-/]([a-z0-9]+)`)

// ownEntries keeps snapshot entries that belong to no instance or to one
// this test's state root issued, and no other package's test binaries.
func ownEntries() func(string) bool {
	issued := map[string]bool{}
	if data, err := os.ReadFile(filepath.Join(StateRoot(), issuedFile)); err == nil {
		for _, id := range strings.Fields(string(data)) {
			issued[id] = true
		}
	}
	self, _ := os.Executable()
	return func(entry string) bool {
		for _, m := range labctlIDs.FindAllStringSubmatch(entry, -1) {
			if !issued[m[1]] {
				return false
			}
		}
		if strings.Contains(entry, ".test ") && !strings.Contains(entry, filepath.Base(self)) {
			return false
		}
		return true
	}
}

func requireNoInstances(t testing.TB) {
	t.Helper()
	all, err := List()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 0 {
		t.Fatalf("instances left: %v", all)
	}
	dirs, err := instanceDirs(StateRoot())
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) != 0 {
		t.Fatalf("instance directories left: %v", dirs)
	}
}

const oneHostYAML = `apiVersion: labctl/v1
name: one
title: One host
summary: One plain host.
difficulty: beginner
duration: 1m
topics: [testing]
briefing: A host called {{ fact "app.hostname" }}.
hosts:
  app: {}
checks:
  - id: name
    ask: What is the host called?
    answer: {equals: '{{ fact "app.hostname" }}'}
`

// threeHostYAML is client - router - server with default routes through
// the router, which forwards.
const threeHostYAML = `apiVersion: labctl/v1
name: three
title: Three hosts
summary: A client reaches a server through a router.
difficulty: beginner
duration: 1m
topics: [testing]
briefing: Client {{ fact "client.addr" }}, server {{ fact "server.addr" }}.
hosts:
  client:
    routes: [{to: default, via: router}]
  router:
    forward: true
  server:
    routes: [{to: default, via: router}]
links:
  - {a: client, b: router}
  - {a: router, b: server}
checks:
  - id: server
    ask: What is the server's address?
    answer: {equals: '{{ fact "server.addr" }}'}
`

func parseLabYAML(name, text string) *labs.Lab {
	lab, err := labs.Parse(name+".yaml", []byte(text))
	if err != nil {
		panic(fmt.Sprintf("test lab %s: %v", name, err))
	}
	return lab
}

func oneHostLab() *labs.Lab   { return parseLabYAML("one", oneHostYAML) }
func threeHostLab() *labs.Lab { return parseLabYAML("three", threeHostYAML) }

// testFile is a fault kind for tests: it writes a file inside the host
// and reverts by removing it. With Fail it fails after writing, so Up
// must revert it.
type testFileParams struct {
	Path    string `yaml:"path" json:"path" template:"true"`
	Content string `yaml:"content" json:"content" template:"true"`
	Fail    bool   `yaml:"fail,omitempty" json:"fail,omitempty"`
}

type testFileState struct {
	Path string `json:"path"`
}

type testFileKind struct{}

var testFileReverts atomic.Int64

func (testFileKind) Apply(ctx context.Context, env faults.Env, f *labs.Fault, params any) (*faults.Applied, error) {
	p := params.(*testFileParams)
	h, err := env.Host(f.Host)
	if err != nil {
		return nil, err
	}
	path := h.RootPath(p.Path)
	state, _ := json.Marshal(testFileState{Path: path})
	if err := os.WriteFile(path, []byte(p.Content), 0o644); err != nil {
		return nil, err
	}
	applied := &faults.Applied{Facts: map[string]string{"path": p.Path, "content": p.Content}, State: state}
	if p.Fail {
		return applied, errors.New("test fault fails on purpose")
	}
	return applied, nil
}

func (testFileKind) Revert(ctx context.Context, env faults.Env, f *labs.Fault, state json.RawMessage) error {
	testFileReverts.Add(1)
	var s testFileState
	if len(state) == 0 {
		return nil
	}
	if err := json.Unmarshal(state, &s); err != nil {
		return err
	}
	if err := os.Remove(s.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func init() {
	faults.Register(labs.FaultKind{
		Name:      "test.file",
		Doc:       "writes a file in a host (tests only)",
		NewParams: func() any { return &testFileParams{} },
		Facts:     []labs.FactSpec{{Name: "path"}, {Name: "content"}},
	}, testFileKind{})
}
