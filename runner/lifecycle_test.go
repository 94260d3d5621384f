package runner

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/labctl/labctl/internal/hostsnap"
	"github.com/labctl/labctl/labs"
)

func up(t testing.TB, lab *labs.Lab, opt UpOptions) *Instance {
	t.Helper()
	in, err := Up(context.Background(), lab, opt)
	if err != nil {
		t.Fatalf("up %s: %v", lab.Name, err)
	}
	return in
}

func down(t testing.TB, in *Instance) {
	t.Helper()
	if err := in.Down(context.Background()); err != nil {
		t.Fatalf("down %s: %v", in.ID, err)
	}
}

// run runs argv inside a host and returns its output.
func run(t testing.TB, in *Instance, host string, argv ...string) string {
	t.Helper()
	cmd, err := in.Command(context.Background(), host, argv...)
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s on %s: %v\n%s", strings.Join(argv, " "), host, err, out)
	}
	return string(out)
}

// machineNet is the part of a snapshot a lab must never touch while it runs.
func machineNet(s *hostsnap.Snapshot) []string {
	var out []string
	for _, l := range s.Links {
		out = append(out, "link "+l.Name+" "+l.Type)
	}
	out = append(out, s.Addrs...)
	return append(out, s.Routes...)
}

func TestUpDownOneHost(t *testing.T) {
	requireRoot(t)
	privateStateRoot(t)
	before := snapshot(t)

	in := up(t, oneHostLab(), UpOptions{})
	if in.Phase != PhaseReady || !validID(in.ID) || in.Name != "one" {
		t.Errorf("instance = phase %q id %q name %q, want ready, a 6-char id, one", in.Phase, in.ID, in.Name)
	}
	if got := strings.TrimSpace(run(t, in, "app", "hostname")); got != "app" {
		t.Errorf("hostname inside = %q, want app", got)
	}
	facts := in.Facts()
	for _, name := range []string{"instance.id", "instance.seed", "app.hostname", "app.init_pid", "app.cgroup"} {
		if facts[name] == "" {
			t.Errorf("fact %s missing (facts: %v)", name, facts)
		}
	}
	if want := "/labctl/" + in.ID + "/app"; facts["app.cgroup"] != want {
		t.Errorf("app.cgroup = %q, want %q", facts["app.cgroup"], want)
	}
	// Everything is found again from disk, as another labctl process would.
	opened, err := Open("")
	if err != nil {
		t.Fatal(err)
	}
	if opened.ID != in.ID || !cmp.Equal(opened.Facts(), facts) || !cmp.Equal(opened.Hosts, in.Hosts) {
		t.Errorf("Open(\"\") = %s with facts %v, want %s with %v", opened.ID, opened.Facts(), in.ID, facts)
	}
	if opened.Lab == nil || opened.Lab.Name != "one" || opened.loadFailed != nil {
		t.Errorf("the lab was not loaded back from the instance: %v", opened.loadFailed)
	}
	if got := machineNet(snapshot(t)); !cmp.Equal(got, machineNet(before)) {
		t.Errorf("the machine's network changed while the lab runs:\n%s", cmp.Diff(machineNet(before), got))
	}
	down(t, in)
	requireNoInstances(t)
	requireNoResidue(t, before)
}

func TestThreeHostsReachEachOtherThroughTheRouter(t *testing.T) {
	requireRoot(t)
	privateStateRoot(t)
	before := snapshot(t)

	in := up(t, threeHostLab(), UpOptions{})
	defer func() {
		down(t, in)
		requireNoInstances(t)
		requireNoResidue(t, before)
	}()
	facts := in.Facts()
	server, client := facts["server.addr"], facts["client.addr"]
	if server == "" || client == "" || facts["router.addr.server"] == "" || facts["router.addr.client"] == "" {
		t.Fatalf("address facts missing: %v", facts)
	}
	if sameSubnet(server, client) {
		t.Fatalf("client %s and server %s share a subnet: the router would not be needed", client, server)
	}
	if got := machineNet(snapshot(t)); !cmp.Equal(got, machineNet(before)) {
		t.Errorf("the machine's network changed while the lab runs:\n%s", cmp.Diff(machineNet(before), got))
	}

	// A listener opened inside the server's namespace; the client
	// connects to it through the router with bash's /dev/tcp.
	nsPath, _ := in.NetNSPath("server")
	var ln net.Listener
	err := inNetNS(nsPath, func() (err error) {
		ln, err = net.Listen("tcp4", net.JoinHostPort(server, "7070"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- "accept: " + err.Error()
			return
		}
		defer c.Close()
		buf := make([]byte, 64)
		n, _ := c.Read(buf)
		accepted <- c.RemoteAddr().(*net.TCPAddr).IP.String() + " said " + string(bytes.TrimSpace(buf[:n]))
	}()
	run(t, in, "client", "bash", "-c", `exec 3<>"/dev/tcp/$0/$1" && echo hello >&3`, server, "7070")
	if got, want := <-accepted, client+" said hello"; got != want {
		t.Errorf("server saw %q, want %q", got, want)
	}
}

func sameSubnet(a, b string) bool {
	_, na, _ := net.ParseCIDR(a + "/24")
	return na.Contains(net.ParseIP(b))
}

func TestTwoInstancesOfOneLab(t *testing.T) {
	requireRoot(t)
	privateStateRoot(t)
	before := snapshot(t)

	a := up(t, threeHostLab(), UpOptions{})
	b := up(t, threeHostLab(), UpOptions{Name: "second-lab"})
	if a.ID == b.ID || a.Name == b.Name || a.AddrBlock == b.AddrBlock {
		t.Errorf("instances share id/name/address block: %s/%s/%d and %s/%s/%d", a.ID, a.Name, a.AddrBlock, b.ID, b.Name, b.AddrBlock)
	}
	if a.Facts()["client.addr"] == b.Facts()["client.addr"] {
		t.Errorf("both instances gave client %s", a.Facts()["client.addr"])
	}
	all, err := List()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all[0].ID != a.ID || all[1].ID != b.ID {
		t.Errorf("List() = %v, want [%s %s] in creation order", all, a.ID, b.ID)
	}
	if _, err := Open(""); err == nil || !strings.Contains(err.Error(), "second-lab") {
		t.Errorf("Open(\"\") with two labs = %v, want an error naming them", err)
	}
	if got, err := Open("second-lab"); err != nil || got.ID != b.ID {
		t.Errorf("Open(second-lab) = %v, %v", got, err)
	}
	if _, err := Up(context.Background(), oneHostLab(), UpOptions{Name: "second-lab"}); err == nil {
		t.Error("a second instance called \"second-lab\" was allowed")
	}
	down(t, a)
	if got := strings.TrimSpace(run(t, b, "server", "hostname")); got != "server" {
		t.Errorf("after the first went down, the second's server says %q", got)
	}
	down(t, b)
	requireNoInstances(t)
	requireNoResidue(t, before)
}

func TestManyUpDownCycles(t *testing.T) {
	requireRoot(t)
	privateStateRoot(t)
	before := snapshot(t)
	cycles := 200
	if testing.Short() {
		cycles = 20
	}
	for i := range cycles {
		in, err := Up(context.Background(), oneHostLab(), UpOptions{})
		if err != nil {
			t.Fatalf("cycle %d: up: %v", i, err)
		}
		if err := in.Down(context.Background()); err != nil {
			t.Fatalf("cycle %d: down: %v", i, err)
		}
	}
	requireNoInstances(t)
	requireNoResidue(t, before)
}

func TestFaultsApplyAndRevert(t *testing.T) {
	requireRoot(t)
	privateStateRoot(t)
	before := snapshot(t)

	lab := oneHostLab()
	lab.Faults = []labs.Fault{{ID: "note", Kind: "test.file", Host: "app",
		With: &testFileParams{Path: "/note.txt", Content: `host {{ fact "app.hostname" }} of {{ fact "instance.id" }}`}}}
	reverts := testFileReverts.Load()
	in := up(t, lab, UpOptions{})
	want := "host app of " + in.ID
	if got := in.Facts()["note.content"]; got != want {
		t.Errorf("fact note.content = %q, want %q", got, want)
	}
	if got := run(t, in, "app", "cat", "/note.txt"); got != want {
		t.Errorf("the file inside the host says %q, want %q", got, want)
	}
	if p := lab.Faults[0].With.(*testFileParams); p.Content == want {
		t.Error("rendering changed the lab's own params instead of a copy")
	}
	down(t, in)
	if n := testFileReverts.Load() - reverts; n != 1 {
		t.Errorf("Revert ran %d times, want 1", n)
	}
	requireNoInstances(t)
	requireNoResidue(t, before)
}

func TestFailingFaultLeavesNothing(t *testing.T) {
	requireRoot(t)
	privateStateRoot(t)
	before := snapshot(t)

	lab := threeHostLab()
	lab.Faults = []labs.Fault{
		{ID: "ok", Kind: "test.file", Host: "client", With: &testFileParams{Path: "/ok", Content: "x"}},
		{ID: "bad", Kind: "test.file", Host: "server", With: &testFileParams{Path: "/bad", Content: "y", Fail: true}},
	}
	reverts := testFileReverts.Load()
	_, err := Up(context.Background(), lab, UpOptions{})
	if err == nil || !strings.Contains(err.Error(), "fault bad") {
		t.Fatalf("Up with a failing fault = %v, want an error naming fault bad", err)
	}
	if n := testFileReverts.Load() - reverts; n != 2 {
		t.Errorf("Revert ran %d times, want 2 (the applied fault and the half-applied one)", n)
	}
	requireNoInstances(t)
	requireNoResidue(t, before)
}

func TestDownIgnoresSIGINT(t *testing.T) {
	requireRoot(t)
	privateStateRoot(t)
	before := snapshot(t)
	in := up(t, threeHostLab(), UpOptions{})

	// Interrupt ourselves after every ledger record teardown writes: the
	// default action would end the test binary.
	sent := 0
	ledgerAppended = func(int) {
		sent++
		syscall.Kill(os.Getpid(), syscall.SIGINT)
	}
	err := in.Down(context.Background())
	ledgerAppended = func(int) {}
	if err != nil {
		t.Fatal(err)
	}
	if sent == 0 {
		t.Fatal("no SIGINT was sent during teardown")
	}
	requireNoInstances(t)
	requireNoResidue(t, before)
}

func TestEventsAndMarks(t *testing.T) {
	requireRoot(t)
	privateStateRoot(t)
	in := up(t, oneHostLab(), UpOptions{})
	defer down(t, in)
	if err := in.RecordEvent("answer", map[string]any{"check": "victim"}); err != nil {
		t.Fatal(err)
	}
	evs, err := in.Events()
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, e := range evs {
		kinds = append(kinds, e.Kind)
	}
	if !cmp.Equal(kinds, []string{"up", "answer"}) || evs[1].Data["check"] != "victim" {
		t.Errorf("events = %+v", evs)
	}
	if err := in.SetMark("oom_kill", "3"); err != nil {
		t.Fatal(err)
	}
	if v, ok := in.Mark("oom_kill"); !ok || v != "3" {
		t.Errorf("Mark(oom_kill) = %q, %v", v, ok)
	}
	info, err := os.Stat(filepath.Join(StateRoot(), in.ID))
	if err != nil || info.Mode().Perm() != 0o700 {
		t.Errorf("instance dir mode = %v, %v; want 0700", info.Mode().Perm(), err)
	}
	code, err := in.Shell(context.Background(), "app", []string{"sh", "-c", "exit 7"}, nil, nil, nil)
	if err != nil || code != 7 {
		t.Errorf("Shell exit code = %d, %v; want 7", code, err)
	}
	var out bytes.Buffer
	code, err = in.Shell(context.Background(), "app", nil, strings.NewReader("echo $LABCTL_LAB:$LABCTL_HOST\n"), &out, &out)
	if err != nil || code != 0 || !strings.Contains(out.String(), "one:app") {
		t.Errorf("interactive shell = %d, %v, output %q", code, err, out.String())
	}
}

// BenchmarkUpDown measures Up to ready and Down of the one-host lab,
// reporting the medians.
func BenchmarkUpDown(b *testing.B) {
	requireRoot(b)
	privateStateRoot(b)
	var ups, downs []time.Duration
	for b.Loop() {
		start := time.Now()
		in, err := Up(context.Background(), oneHostLab(), UpOptions{})
		if err != nil {
			b.Fatal(err)
		}
		mid := time.Now()
		if err := in.Down(context.Background()); err != nil {
			b.Fatal(err)
		}
		ups = append(ups, mid.Sub(start))
		downs = append(downs, time.Since(mid))
	}
	b.ReportMetric(float64(median(ups).Microseconds())/1000, "up-ms/median")
	b.ReportMetric(float64(median(downs).Microseconds())/1000, "down-ms/median")
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func TestHostFilesAndResolverUseFacts(t *testing.T) {
	requireRoot(t)
	privateStateRoot(t)
	before := snapshot(t)
	lab := parseLabYAML("files", strings.Replace(threeHostYAML, `  client:
    routes: [{to: default, via: router}]`, `  client:
    routes: [{to: default, via: router}]
    files:
      - path: /etc/app.conf
        content: 'server={{ fact "server.addr" }} me={{ fact "client.addr.router" }}'
        mode: 0600
    dns:
      nameservers: [router]
      search: [lab.test]
      hosts: {web: server}`, 1))
	in := up(t, lab, UpOptions{})
	f := in.Facts()
	if got, want := run(t, in, "client", "cat", "/etc/app.conf"), "server="+f["server.addr"]+" me="+f["client.addr"]; got != want {
		t.Errorf("/etc/app.conf = %q, want %q", got, want)
	}
	if got := run(t, in, "client", "stat", "-c", "%a", "/etc/app.conf"); strings.TrimSpace(got) != "600" {
		t.Errorf("/etc/app.conf mode = %s, want 600", got)
	}
	resolv := run(t, in, "client", "cat", "/etc/resolv.conf")
	if !strings.Contains(resolv, "nameserver "+f["router.addr.client"]+"\n") || !strings.Contains(resolv, "search lab.test\n") {
		t.Errorf("client's resolv.conf:\n%s\nwant nameserver %s (the router on the client's link)", resolv, f["router.addr.client"])
	}
	if hosts := run(t, in, "client", "getent", "hosts", "web"); !strings.HasPrefix(hosts, f["server.addr"]+" ") {
		t.Errorf("getent hosts web = %q, want %s", hosts, f["server.addr"])
	}
	down(t, in)
	requireNoResidue(t, before)
}
