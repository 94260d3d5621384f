package netfault_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/google/go-cmp/cmp"

	_ "github.com/labctl/labctl/checks"
	_ "github.com/labctl/labctl/faults/net"
	"github.com/labctl/labctl/internal/hostsnap"
	"github.com/labctl/labctl/internal/reexec"
	"github.com/labctl/labctl/labs"
	"github.com/labctl/labctl/runner"
)

func TestMain(m *testing.M) {
	// Host inits, enter helpers and the services are this binary re-executed.
	if reexec.Init() {
		return
	}
	os.Exit(m.Run())
}

func skipUnlessRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network, pid and mount namespaces (CI runs as root)")
	}
}

const labDir = "../../labs/network"

// machineNet is the part of a snapshot a network lab could leak into: the
// machine's own links, addresses, routes and nftables ruleset.
type machineNet struct {
	Links    []hostsnap.Link
	Addrs    []string
	Routes   []string
	Nftables string
}

func takeNet(t testing.TB) machineNet {
	t.Helper()
	s, err := hostsnap.Take()
	if err != nil {
		t.Fatal(err)
	}
	return machineNet{s.Links, s.Addrs, s.Routes, s.Nftables}
}

// toolSees is one standard tool run inside a lab host while the fault is
// there, and what its output must (and must not) show. Expectations are
// templates over the instance's facts.
type toolSees struct {
	host    string
	argv    []string
	exit    int    // expected exit code
	want    string // regexp the output must match
	notWant string // regexp the output must not match
}

var labTools = map[string][]toolSees{
	"no-default-route": {
		{host: "client", argv: []string{"ip", "route"}, want: `{{ fact "client.addr" }}`, notWant: `default`},
		{host: "client", argv: []string{"ping", "-c1", "-W1", `{{ fact "server.addr" }}`}, exit: 2, want: `Network is unreachable`},
	},
	"wrong-gateway": {
		{host: "client", argv: []string{"ip", "route", "show", "default"}, want: `default via {{ fact "route.gateway" }} dev eth0`},
		{host: "client", argv: []string{"curl", "-sS", "-m", "5", `http://{{ fact "server.addr" }}:8080/`}, exit: 7, want: `Couldn't connect to server`},
		// The curl above made the kernel ask for the gateway's MAC: nobody answered.
		{host: "client", argv: []string{"ip", "neigh", "show", `{{ fact "route.gateway" }}`}, want: `^{{ fact "route.gateway" }} dev eth0 +(FAILED|INCOMPLETE)`},
	},
	"router-not-forwarding": {
		{host: "router", argv: []string{"sysctl", "net.ipv4.ip_forward"}, want: `net.ipv4.ip_forward = 0`},
		{host: "client", argv: []string{"ping", "-c1", "-W1", `{{ fact "router.addr.client" }}`}, want: `1 received`},
		{host: "client", argv: []string{"ping", "-c1", "-W1", `{{ fact "server.addr" }}`}, exit: 1, want: `0 received`},
	},
	"interface-down": {
		{host: "router", argv: []string{"ip", "-o", "link", "show", "eth1"}, want: `state DOWN`, notWant: `[<,]UP[,>]`},
		{host: "client", argv: []string{"ping", "-c1", "-W1", `{{ fact "server.addr" }}`}, exit: 1, want: `From {{ fact "router.addr.client" }}.*(Unreachable|unreachable)`},
	},
	"dead-nameserver": {
		{host: "client", argv: []string{"dig", "+short", "+time=1", "+tries=1", `@{{ fact "srv.addr" }}`, "api.corp.lab"}, want: `^{{ fact "srv.addr" }}\n$`},
		{host: "client", argv: []string{"getent", "hosts", "api.corp.lab"}, exit: 2},
		{host: "client", argv: []string{"cat", "/etc/resolv.conf"}, want: `nameserver {{ fact "dns.nameserver" }}`},
	},
	"slow-lookups": {
		{host: "client", argv: []string{"dig", "+time=1", "+tries=1", `@{{ fact "dns.nameserver" }}`, "api.corp.lab"}, exit: 9, want: `timed out`},
		{host: "client", argv: []string{"getent", "hosts", "api.corp.lab"}, want: `{{ fact "srv.addr" }}`},
	},
	"wrong-search-domain": {
		{host: "client", argv: []string{"getent", "hosts", "api"}, exit: 2},
		{host: "client", argv: []string{"getent", "hosts", "api.corp.lab"}, want: `{{ fact "srv.addr" }}`},
		{host: "client", argv: []string{"dig", "+search", "+short", "api"}, notWant: `\d`},
	},
	"stale-hosts": {
		{host: "client", argv: []string{"getent", "hosts", "api.corp.lab"}, want: `^{{ fact "dns.stale_addr" }}\s+api\.corp\.lab`},
		{host: "client", argv: []string{"dig", "+short", "api.corp.lab"}, want: `^{{ fact "srv.addr" }}\n$`},
	},
	"localhost-only": {
		{host: "server", argv: []string{"ss", "-ltnp"}, want: `127\.0\.0\.1:8080 .*"api",pid={{ fact "bind.pid" }},`},
		{host: "server", argv: []string{"curl", "-sS", "-m", "2", "http://127.0.0.1:8080/"}, want: `api ok`},
		{host: "client", argv: []string{"curl", "-sS", "-m", "2", `http://{{ fact "server.addr" }}:8080/`}, exit: 7, want: `(refused|Couldn't connect)`},
	},
	"port-in-use": {
		{host: "server", argv: []string{"ss", "-ltnp"}, want: `0\.0\.0\.0:8080 .*"backup-agent",pid={{ fact "squat.pid" }},`},
		{host: "server", argv: []string{"cat", "/tmp/api.log"}, want: `address already in use`},
		{host: "server", argv: []string{"ps", "-o", "args=", "-p", `{{ fact "api.pid" }}`}, want: `^api --config /etc/api.conf\n$`},
	},
	"firewall-drop": {
		{host: "server", argv: []string{"nft", "list", "ruleset"}, want: `tcp dport 8080 counter packets \d+ bytes \d+ drop`},
		{host: "server", argv: []string{"ss", "-ltn"}, want: `0\.0\.0\.0:8080`},
		{host: "client", argv: []string{"curl", "-sS", "-m", "1", `http://{{ fact "server.addr" }}:8080/`}, exit: 28, want: `timed out`},
	},
}

// TestLabsShowTheirFault brings every lab of the family up and shows
// that the tools a learner reaches for see the fault, while the
// machine's own links, addresses, routes and nftables ruleset stay as
// they were, during the lab and after it.
func TestLabsShowTheirFault(t *testing.T) {
	skipUnlessRoot(t)
	files, err := filepath.Glob(filepath.Join(labDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no labs in %s: %v", labDir, err)
	}
	before := takeNet(t)
	seen := map[string]bool{}
	for _, file := range files {
		lab, err := labs.LoadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		seen[lab.Name] = true
		t.Run(lab.Name, func(t *testing.T) {
			tools, ok := labTools[lab.Name]
			if !ok {
				t.Fatalf("no tool expectations for lab %s: add them to labTools", lab.Name)
			}
			ctx := context.Background()
			in, err := runner.Up(ctx, lab, runner.UpOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := in.Down(ctx); err != nil {
					t.Errorf("down: %v", err)
				}
			}()
			for _, tool := range tools {
				checkTool(t, in, tool)
			}
			if diff := cmp.Diff(before, takeNet(t)); diff != "" {
				t.Errorf("the machine's network changed while %s is up (-before +now):\n%s", lab.Name, diff)
			}
		})
	}
	for name := range labTools {
		if !seen[name] {
			t.Errorf("labTools names %s, which is not a lab in %s", name, labDir)
		}
	}
	if diff := cmp.Diff(before, takeNet(t)); diff != "" {
		t.Errorf("the machine's network changed (-before +after):\n%s", diff)
	}
}

func checkTool(t *testing.T, in *runner.Instance, tool toolSees) {
	t.Helper()
	argv := make([]string, len(tool.argv))
	for i, a := range tool.argv {
		argv[i] = render(t, in, a, false)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	code, err := in.Shell(ctx, tool.host, argv, nil, &out, &out)
	if err != nil {
		t.Fatalf("%s: %v", strings.Join(argv, " "), err)
	}
	what := tool.host + "$ " + strings.Join(argv, " ")
	if code != tool.exit {
		t.Errorf("%s: exit %d, want %d; output:\n%s", what, code, tool.exit, out.String())
	}
	if tool.want != "" {
		re := regexp.MustCompile("(?m)" + render(t, in, tool.want, true))
		if !re.Match(out.Bytes()) {
			t.Errorf("%s: output does not match %s:\n%s", what, re, out.String())
		}
	}
	if tool.notWant != "" {
		re := regexp.MustCompile("(?m)" + render(t, in, tool.notWant, true))
		if re.Match(out.Bytes()) {
			t.Errorf("%s: output matches %s:\n%s", what, re, out.String())
		}
	}
}

// render expands {{ fact "x" }}, quoting facts when the template is a
// regexp (dots in addresses must match only dots).
func render(t *testing.T, in *runner.Instance, s string, quote bool) string {
	t.Helper()
	tmpl, err := template.New("").Funcs(template.FuncMap{
		"fact": func(name string) (string, error) {
			v, ok := in.Fact(name)
			if !ok {
				return "", &missingFact{name}
			}
			if quote {
				return regexp.QuoteMeta(v), nil
			}
			return v, nil
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

type missingFact struct{ name string }

func (e *missingFact) Error() string { return "no fact " + e.name }

// moreModes are the fault modes the catalog labs do not use, in test labs.
var moreModes = map[string][]toolSees{
	"more-dns-listeners.yaml": {
		// nsswitch "dns files": DNS now wins over the stale hosts entry.
		{host: "client", argv: []string{"getent", "hosts", "api.corp.lab"}, want: `^{{ fact "server.addr" }}\s`},
		{host: "client", argv: []string{"grep", "api.corp.lab", "/etc/hosts"}, want: `198\.51\.100\.20`},
		{host: "client", argv: []string{"dig", "+time=1", "+tries=1", "broken.corp.lab"}, want: `status: SERVFAIL`},
		{host: "client", argv: []string{"dig", "+time=1", "+tries=1", "nosuch.corp.lab"}, want: `status: NXDOMAIN`},
		{host: "client", argv: []string{"dig", "+short", "AAAA", "v6.corp.lab"}, want: `^fd00::7$`},
		{host: "server", argv: []string{"ss", "-ltnp"}, want: `0\.0\.0\.0:9090 .*"api",pid={{ fact "moved.pid" }},`, notWant: `:8080 `},
		{host: "client", argv: []string{"curl", "-sS", "-m", "2", `http://{{ fact "server.addr" }}:9090/`}, want: `api ok`},
		{host: "client", argv: []string{"curl", "-sS", "-m", "2", `telnet://{{ fact "server.addr" }}:7007`}, exit: 7, want: `(refused|Couldn't connect)`},
		{host: "server", argv: []string{"nft", "list", "table", "inet", "guard"}, want: `tcp dport 7007 counter packets [1-9]\d* bytes \d+ reject`},
		// The echo service on another host sends back what the client sends,
		// line after line on one connection.
		{host: "server", argv: []string{"ss", "-ltnp"}, want: `0\.0\.0\.0:7 .*"echod",pid={{ fact "echo7.pid" }},`},
		{host: "client", argv: []string{"bash", "-c", `exec 3<>/dev/tcp/{{ fact "server.addr" }}/7 && printf 'hello from %s\nsecond line\n' "$(hostname)" >&3 && read -r -t 5 a <&3 && read -r -t 5 b <&3 && echo "got [$a] [$b]"`},
			want: `^got \[hello from client\] \[second line\]$`},
	},
	"more-routes-links.yaml": {
		{host: "client", argv: []string{"ip", "route", "show", "type", "blackhole"}, want: `^blackhole {{ fact "server.addr" }}`},
		{host: "client", argv: []string{"ip", "route", "show", "type", "unreachable"}, want: `^unreachable 198\.51\.100\.0/24`},
		{host: "client", argv: []string{"ip", "route", "show", "type", "prohibit"}, want: `^prohibit 203\.0\.113\.0/24`},
		{host: "client", argv: []string{"ping", "-c1", "-W1", "198.51.100.1"}, exit: 2, want: `No route to host`},
		{host: "server", argv: []string{"ip", "-o", "-4", "addr", "show", "eth0"}, want: `inet 192\.0\.2\.7/24`, notWant: `inet {{ fact "server.addr" }}/`},
		// A prefix too long on edge's side: its .130/25 does not cover the
		// router's .1, so edge has no route to its own neighbour, and the
		// router's pings (it still sees one /24) get no answer back.
		{host: "edge", argv: []string{"ip", "-o", "-4", "addr", "show", "eth0"}, want: `inet {{ fact "edge.addr" }}/25 `, notWant: `/24 `},
		{host: "edge", argv: []string{"ip", "route", "get", `{{ fact "router.addr.edge" }}`}, exit: 2, want: `Network is unreachable`},
		{host: "edge", argv: []string{"ping", "-c1", "-W1", `{{ fact "router.addr.edge" }}`}, exit: 2, want: `Network is unreachable`},
		{host: "router", argv: []string{"ping", "-c1", "-W1", `{{ fact "edge.addr" }}`}, exit: 1, want: `0 received`},
		// The fix: the right prefix length back, and both directions work.
		{host: "edge", argv: []string{"sh", "-c", `ip addr del {{ fact "edge.addr" }}/25 dev eth0 && ip addr add {{ fact "edge.addr" }}/24 dev eth0`}},
		{host: "edge", argv: []string{"ping", "-c1", "-W2", `{{ fact "router.addr.edge" }}`}, want: `1 received`},
		{host: "router", argv: []string{"ping", "-c1", "-W2", `{{ fact "edge.addr" }}`}, want: `1 received`},
	},
}

// TestMoreModes covers the modes of the kinds no catalog lab uses, and
// their Revert (down reverts every fault while its host is alive).
func TestMoreModes(t *testing.T) {
	skipUnlessRoot(t)
	before := takeNet(t)
	for file, tools := range moreModes {
		t.Run(file, func(t *testing.T) {
			lab, err := labs.LoadFile(filepath.Join("testdata", file))
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			in, err := runner.Up(ctx, lab, runner.UpOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := in.Down(ctx); err != nil {
					t.Errorf("down: %v", err)
				}
			}()
			for _, tool := range tools {
				checkTool(t, in, tool)
			}
			if diff := cmp.Diff(before, takeNet(t)); diff != "" {
				t.Errorf("the machine's network changed (-before +now):\n%s", diff)
			}
		})
	}
	if diff := cmp.Diff(before, takeNet(t)); diff != "" {
		t.Errorf("the machine's network changed (-before +after):\n%s", diff)
	}
}

// BenchmarkUpThreeHosts measures bringing up a client-router-server
// topology with its api service (and taking it down), and reports the
// median of the up times.
func BenchmarkUpThreeHosts(b *testing.B) {
	skipUnlessRoot(b)
	lab, err := labs.LoadFile(filepath.Join(labDir, "router-not-forwarding.yaml"))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var ups []time.Duration
	for b.Loop() {
		start := time.Now()
		in, err := runner.Up(ctx, lab, runner.UpOptions{})
		if err != nil {
			b.Fatal(err)
		}
		ups = append(ups, time.Since(start))
		if err := in.Down(ctx); err != nil {
			b.Fatal(err)
		}
	}
	sort.Slice(ups, func(i, j int) bool { return ups[i] < ups[j] })
	b.ReportMetric(float64(ups[len(ups)/2].Milliseconds()), "median-up-ms")
}
