package systemd_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	_ "github.com/labctl/labctl/checks"
	_ "github.com/labctl/labctl/faults/systemd"
	"github.com/labctl/labctl/internal/hostsnap"
	"github.com/labctl/labctl/internal/reexec"
	"github.com/labctl/labctl/internal/rootfs"
	"github.com/labctl/labctl/internal/testenv"
	"github.com/labctl/labctl/runner"
)

func TestMain(m *testing.M) {
	// The enter helper and nspawn's launcher are this binary re-executed.
	if reexec.Init() {
		return
	}
	os.Exit(m.Run())
}

func requireRoot(t *testing.T) {
	t.Helper()
	testenv.RequireLabs(t, "boots systemd hosts with systemd-nspawn")
}

const labDir = "../../labs/systemd"

// orderLab is the lab of problem dependency-order, outside the catalog.
const orderLab = "testdata/dependency-order.yaml"

// labFiles are the family's catalog labs and its test lab.
func labFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(labDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no labs in %s: %v", labDir, err)
	}
	return append(files, orderLab)
}

// toolSees is one standard tool run inside host app while the fault is
// there (as `labctl shell INSTANCE --host app -- ARGV` runs it), and what
// its output must (and must not) show. Expectations are templates over
// the instance's facts.
type toolSees struct {
	argv    []string
	exit    int    // expected exit code
	want    string // regexp the output (stdout and stderr) must match
	notWant string // regexp the output must not match
}

// labTools: what systemctl, journalctl and friends show in each lab,
// in the order a learner would run them.
var labTools = map[string][]toolSees{
	"exec-not-found": {
		{argv: []string{"systemctl", "status", "--no-pager", "worker.service"}, exit: 3,
			want: `(?s)Active: failed \(Result: exit-code\).*Main PID: \d+ \(code=exited, status=203/EXEC\)`},
		{argv: []string{"journalctl", "--no-pager", "-u", "worker.service"},
			want: `worker.service: Failed at step EXEC spawning /usr/local/sbin/queue-worker: No such file or directory`},
		{argv: []string{"systemctl", "show", "-p", "ExecMainStatus", "worker.service"}, want: `^ExecMainStatus={{ fact "broken.exec_status" }}$`},
		{argv: []string{"systemd-analyze", "verify", "worker.service"}, exit: 1,
			want: `worker.service: Command /usr/local/sbin/queue-worker is not executable: No such file or directory`},
	},
	"crash-loop": {
		{argv: []string{"systemctl", "status", "--no-pager", "ingest.service"}, exit: 3,
			want: `(?s)Active: failed .*ingest.service: Start request repeated too quickly\.`},
		{argv: []string{"systemctl", "show", "-p", "NRestarts", "ingest.service"}, want: `^NRestarts={{ fact "crash.n_restarts" }}$`},
		{argv: []string{"journalctl", "--no-pager", "-u", "ingest.service"},
			want: `(?s)ingest: cannot read config /etc/ingest.conf: No such file or directory.*restart counter is at {{ fact "crash.n_restarts" }}\.`},
	},
	"missing-user": {
		{argv: []string{"systemctl", "status", "--no-pager", "reportd.service"}, exit: 3,
			want: `Main PID: \d+ \(code=exited, status=217/USER\)`},
		{argv: []string{"journalctl", "--no-pager", "-u", "reportd.service"},
			want: `(?s)Failed to determine user credentials: No such process.*Failed at step USER spawning /usr/local/bin/reportd`},
		{argv: []string{"getent", "passwd", "reportd"}, exit: 2},
	},
	"too-few-files": {
		{argv: []string{"systemctl", "status", "--no-pager", "indexer.service"}, exit: 3,
			want: `Main PID: \d+ \(code=exited, status=1/FAILURE\)`},
		{argv: []string{"journalctl", "--no-pager", "-u", "indexer.service"},
			want: `(?s)Too many open files.*indexer: opening shard \d+ failed`},
		{argv: []string{"systemctl", "show", "-p", "LimitNOFILESoft", "indexer.service"}, want: `^LimitNOFILESoft=32$`},
		// The learner's shell has far more.
		{argv: []string{"sh", "-c", "ulimit -n"}, notWant: `^32$`},
	},
	"missing-dependency": {
		{argv: []string{"systemctl", "start", "billing.service"}, exit: 5,
			want: `Failed to start billing.service: Unit db-tunnel.service not found\.`},
		{argv: []string{"systemctl", "status", "--no-pager", "billing.service"}, exit: 3, want: `Active: inactive \(dead\)`},
		{argv: []string{"journalctl", "--no-pager", "-u", "billing.service"}, want: `-- No entries --`},
		{argv: []string{"systemctl", "list-unit-files", "--no-pager", "*tunnel*"}, want: `^dbtunnel\.service `, notWant: `db-tunnel`},
		{argv: []string{"systemd-analyze", "verify", "billing.service"}, exit: 1,
			want: `billing.service: Failed to create billing.service/start: Unit db-tunnel.service not found\.`},
	},
	"forking-timeout": {
		{argv: []string{"systemctl", "status", "--no-pager", "cached.service"}, exit: 3,
			want: `(?s)Active: failed \(Result: timeout\).*ExecStart=/usr/local/bin/cached \(code=killed, signal=TERM\)`},
		{argv: []string{"journalctl", "--no-pager", "-u", "cached.service"}, want: `cached.service: start operation timed out\. Terminating\.`},
		{argv: []string{"systemctl", "show", "-p", "Type", "cached.service"}, want: `^Type=forking$`},
		{argv: []string{"systemctl", "show", "-p", "Result", "cached.service"}, want: `^Result={{ fact "fork.result" }}$`},
	},
	"hardening-blocks-writes": {
		{argv: []string{"journalctl", "--no-pager", "-u", "counterd.service"},
			want: `cannot create /var/lib/counter/state: Read-only file system`},
		{argv: []string{"systemctl", "show", "-p", "ProtectSystem", "counterd.service"}, want: `^ProtectSystem=strict$`},
		{argv: []string{"systemctl", "show", "-p", "ReadWritePaths", "counterd.service"}, want: `^ReadWritePaths=$`},
		// Not read-only for the learner's shell: only for the service.
		{argv: []string{"touch", "/var/lib/counter/state"}},
	},
	"reload-does-nothing": {
		{argv: []string{"systemctl", "status", "--no-pager", "web.service"},
			want: `(?s)Active: active \(running\).*ExecReload=/bin/true \(code=exited, status=0/SUCCESS\)`},
		{argv: []string{"journalctl", "--no-pager", "-u", "web.service"},
			want: `(?s)configuration loaded \(level=info\).*Reloaded web\.service`, notWant: `level=debug`},
		{argv: []string{"grep", "^level=", "/etc/web/web.conf"}, want: `^level=debug$`},
		{argv: []string{"cat", "/run/web.level"}, want: `^info$`},
	},
	"missing-envfile": {
		{argv: []string{"systemctl", "status", "--no-pager", "mailer.service"}, exit: 3,
			want: `(?s)Active: failed \(Result: resources\).*mailer.service: Failed to load environment files: No such file or directory`},
		{argv: []string{"systemctl", "show", "-p", "EnvironmentFiles", "mailer.service"},
			want: `^EnvironmentFiles=/etc/default/mailer \(ignore_errors=no\)$`},
		{argv: []string{"test", "-e", "/etc/default/mailer"}, exit: 1},
	},
	"dependency-order": {
		{argv: []string{"systemctl", "status", "--no-pager", "api.service"}, exit: 3,
			want: `(?s)Active: failed \(Result: exit-code\).*api: cannot read /run/token/api.token: No such file or directory`},
		{argv: []string{"systemctl", "show", "-p", "Requires", "-p", "After", "api.service"},
			want: `^Requires=.*\btoken-fetch\.service\b`, notWant: `^After=.*token-fetch`},
		// The required unit itself is fine: starting it waits until it has
		// finished, and then its journal is in order after the api's.
		{argv: []string{"systemctl", "start", "token-fetch.service"}},
		{argv: []string{"journalctl", "--no-pager", "-u", "api.service", "-u", "token-fetch.service"},
			want: `(?s)api: cannot read /run/token/api\.token.*token-fetch: token written to /run/token/api\.token.*Finished token-fetch\.service`},
	},
}

// TestLabsShowTheirFault brings every lab of the family up and shows that
// the tools a learner reaches for see the fault, that the snapshot sees
// the host's nspawn state while it runs, and that down leaves nothing.
func TestLabsShowTheirFault(t *testing.T) {
	requireRoot(t)
	testenv.PrivateStateRoot(t)
	seen := map[string]bool{}
	for _, file := range labFiles(t) {
		lab := testenv.LoadLab(t, file)
		seen[lab.Name] = true
		t.Run(lab.Name, func(t *testing.T) {
			tools, ok := labTools[lab.Name]
			if !ok {
				t.Fatalf("no tool expectations for lab %s: add them to labTools", lab.Name)
			}
			in, err := runner.Up(context.Background(), lab, runner.UpOptions{})
			if err != nil {
				t.Fatal(err)
			}
			downed := false
			defer func() {
				if !downed {
					_ = in.Down(context.Background())
				}
			}()
			for _, tool := range tools {
				checkTool(t, in, tool)
			}
			snap, err := hostsnap.Take()
			if err != nil {
				t.Fatal(err)
			}
			// The machine is labctl-<instance>-<host>: nspawn keeps its
			// propagation directory while it runs, and the snapshot sees it.
			if want := "nspawn propagate/labctl-" + in.ID + "-app/"; !contains(snap.Mentioning(in.ID), want) {
				t.Errorf("the snapshot does not see the running host's nspawn state %q: %q", want, snap.Mentioning(in.ID))
			}
			downed = true
			if err := in.Down(context.Background()); err != nil {
				t.Fatalf("down: %v", err)
			}
			requireGone(t, in.ID)
		})
	}
	for name := range labTools {
		if !seen[name] {
			t.Errorf("labTools names %s, which is not a lab of the family", name)
		}
	}
}

func checkTool(t *testing.T, in *runner.Instance, tool toolSees) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	code, err := in.Shell(ctx, "app", tool.argv, nil, &out, &out)
	if err != nil {
		t.Fatalf("%s: %v", strings.Join(tool.argv, " "), err)
	}
	what := "app$ " + strings.Join(tool.argv, " ")
	if code != tool.exit {
		t.Errorf("%s: exit %d, want %d; output:\n%s", what, code, tool.exit, out.String())
	}
	if tool.want != "" {
		re := regexp.MustCompile("(?m)" + render(t, in, tool.want))
		if !re.Match(out.Bytes()) {
			t.Errorf("%s: output does not match %s:\n%s", what, re, out.String())
		}
	}
	if tool.notWant != "" {
		re := regexp.MustCompile("(?m)" + render(t, in, tool.notWant))
		if re.Match(out.Bytes()) {
			t.Errorf("%s: output matches %s:\n%s", what, re, out.String())
		}
	}
}

// render expands {{ fact "x" }} in a regexp, quoting the fact.
func render(t *testing.T, in *runner.Instance, s string) string {
	t.Helper()
	tmpl, err := template.New("").Funcs(template.FuncMap{
		"fact": func(name string) (string, error) {
			v, ok := in.Fact(name)
			if !ok {
				return "", errors.New("no fact " + name)
			}
			return regexp.QuoteMeta(v), nil
		},
	}).Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := tmpl.Execute(&b, nil); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// requireGone polls until nothing on the machine carries the instance's id
// (a killed PID 1 is reaped by the machine's init just after down).
func requireGone(t *testing.T, id string) {
	t.Helper()
	var left []string
	for deadline := time.Now().Add(15 * time.Second); ; {
		snap, err := hostsnap.Take()
		if err != nil {
			t.Fatal(err)
		}
		if left = snap.Mentioning(id); len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("residue of %s after down: %q", id, left)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestTwoInstancesDoNotClash runs two instances of one lab at once: both
// broken, the solution applied to one heals that one only (each host has
// its own overlay over the shared root filesystem, its own cgroups and
// nspawn state), and after both are down the machine is as before.
func TestTwoInstancesDoNotClash(t *testing.T) {
	requireRoot(t)
	testenv.PrivateStateRoot(t)
	lab := testenv.LoadLab(t, filepath.Join(labDir, "exec-not-found.yaml"))
	before, err := hostsnap.Take()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	start := time.Now()
	var ins [2]*runner.Instance
	var errs [2]error
	var wg sync.WaitGroup
	for i := range ins {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ins[i], errs[i] = runner.Up(ctx, lab, runner.UpOptions{Name: []string{"twin-a", "twin-b"}[i]})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("up twin %d: %v", i, err)
		}
	}
	a, b := ins[0], ins[1]
	t.Logf("both up after %s", time.Since(start).Round(time.Millisecond))
	for _, in := range ins {
		if got := show(t, in, "ExecMainStatus"); got != "203" {
			t.Errorf("%s: ExecMainStatus=%s, want 203 (broken)", in.Name, got)
		}
	}
	if err := a.Solve(ctx, io.Discard); err != nil {
		t.Fatalf("solve %s: %v", a.Name, err)
	}
	outcomes := map[string]bool{}
	for _, in := range ins {
		res, err := in.Check(ctx, []string{"verifies", "running"})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range res {
			outcomes[in.Name+"/"+o.ID] = o.Passed()
		}
	}
	t.Logf("solved and checked after %s", time.Since(start).Round(time.Millisecond))
	want := map[string]bool{"twin-a/verifies": true, "twin-a/running": true, "twin-b/verifies": false, "twin-b/running": false}
	for k, v := range want {
		if outcomes[k] != v {
			t.Errorf("check %s passes=%v, want %v (all: %v)", k, outcomes[k], v, outcomes)
		}
	}
	if got := show(t, b, "ActiveState"); got != "failed" {
		t.Errorf("%s after %s was solved: ActiveState=%s, want failed", b.Name, a.Name, got)
	}
	// The solution edited the unit in a's overlay only.
	var unit bytes.Buffer
	if _, err := b.Shell(ctx, "app", []string{"cat", "/etc/systemd/system/worker.service"}, nil, &unit, &unit); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(unit.String(), "ExecStart=/usr/local/sbin/queue-worker") {
		t.Errorf("%s's unit changed with %s's solution:\n%s", b.Name, a.Name, unit.String())
	}
	if _, err := os.Stat(filepath.Join(rootfs.Dir(), "etc/systemd/system/worker.service")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the shared root filesystem holds the lab's unit: %v", err)
	}
	for _, in := range ins {
		if err := in.Down(ctx); err != nil {
			t.Errorf("down %s: %v", in.Name, err)
		}
	}
	t.Logf("both down after %s", time.Since(start).Round(time.Millisecond))
	diff, err := runner.SettledDiff(before)
	if err != nil {
		t.Fatal(err)
	}
	if diff != "" {
		t.Errorf("the machine differs after both are down (-before +after):\n%s", diff)
	}
}

// show reads one systemctl show property of the lab's unit.
func show(t *testing.T, in *runner.Instance, prop string) string {
	t.Helper()
	unit, _ := in.Fact("broken.unit")
	var out bytes.Buffer
	code, err := in.Shell(context.Background(), "app", []string{"systemctl", "show", "--value", "-p", prop, unit}, nil, &out, &out)
	if err != nil || code != 0 {
		t.Fatalf("systemctl show on %s: exit %d, %v: %s", in.Name, code, err, out.String())
	}
	return strings.TrimSpace(out.String())
}

// TestKilledNspawnLeavesStateThatDownRemoves kills a host's systemd-nspawn
// with SIGKILL, as a crash would: its per-machine state under
// /run/systemd/nspawn stays behind (the container's systemd lives on,
// reparented), the snapshot shows it, and down removes it so that the
// machine is as before.
func TestKilledNspawnLeavesStateThatDownRemoves(t *testing.T) {
	requireRoot(t)
	testenv.PrivateStateRoot(t)
	before, err := hostsnap.Take()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	in, err := runner.Up(ctx, testenv.LoadLab(t, filepath.Join(labDir, "exec-not-found.yaml")), runner.UpOptions{})
	if err != nil {
		t.Fatal(err)
	}
	leader, _ := in.Fact("app.init_pid")
	nspawn := statField(t, leader, 1)
	if comm, _ := os.ReadFile("/proc/" + nspawn + "/comm"); strings.TrimSpace(string(comm)) != "systemd-nspawn" {
		t.Fatalf("the parent %s of the host's PID 1 %s is %q, not systemd-nspawn", nspawn, leader, comm)
	}
	pid, _ := strconv.Atoi(nspawn)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Gone once reaped (this process started it) or a zombie meanwhile.
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := os.Stat("/proc/" + nspawn); errors.Is(err, os.ErrNotExist) || statField(t, nspawn, 0) == "Z" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("systemd-nspawn %s lives on after SIGKILL", nspawn)
		}
		time.Sleep(10 * time.Millisecond)
	}
	snap, err := hostsnap.Take()
	if err != nil {
		t.Fatal(err)
	}
	if want := "nspawn propagate/labctl-" + in.ID + "-app/"; !contains(snap.Mentioning(in.ID), want) {
		t.Errorf("after nspawn died the snapshot does not show its leftover %q: %q", want, snap.Nspawn)
	}
	if d := hostsnap.Diff(before, snap); !strings.Contains(d, "Nspawn") {
		t.Errorf("the snapshot with nspawn's leftovers equals the one before the lab:\n%s", d)
	}
	if err := in.Down(ctx); err != nil {
		t.Fatalf("down: %v", err)
	}
	requireGone(t, in.ID)
	diff, err := runner.SettledDiff(before)
	if err != nil {
		t.Fatal(err)
	}
	if diff != "" {
		t.Errorf("the machine differs after down (-before +after):\n%s", diff)
	}
}

// statField returns field i of /proc/PID/stat after the command name
// (0: state, 1: parent PID), or "" once the process is gone.
func statField(t *testing.T, pid string, i int) string {
	t.Helper()
	data, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	if len(f) <= i {
		t.Fatalf("malformed /proc/%s/stat: %q", pid, data)
	}
	return f[i]
}

// TestDependencyOrderLab puts the lab of problem dependency-order, which
// the catalog self-test does not see, through labctl test's phases.
func TestDependencyOrderLab(t *testing.T) {
	requireRoot(t)
	testenv.PrivateStateRoot(t)
	res := runner.SelfTest(context.Background(), testenv.LoadLab(t, orderLab), runner.TestOptions{Run: 1})
	if p := res.Failed(); p != nil {
		t.Fatalf("phase %s %s: %s", p.Phase, p.Name, p.Message)
	}
}

// TestLabsSelfTest is `labctl test --repeat N` for every lab of the family.
func TestLabsSelfTest(t *testing.T) {
	runs := testenv.SelfTestRuns(t)
	requireRoot(t)
	for _, file := range labFiles(t) {
		lab := testenv.LoadLab(t, file)
		t.Run(lab.Name, func(t *testing.T) {
			testenv.PrivateStateRoot(t)
			for run := 1; run <= runs; run++ {
				res := runner.SelfTest(context.Background(), lab, runner.TestOptions{Run: run})
				if p := res.Failed(); p != nil {
					t.Fatalf("run %d: phase %s %s: %s", run, p.Phase, p.Name, p.Message)
				}
			}
		})
	}
}
