package netfault

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/miekg/dns"

	"github.com/labctl/labctl/labs"
)

// recorder is a dns.ResponseWriter that keeps the reply.
type recorder struct{ msg *dns.Msg }

func (r *recorder) LocalAddr() net.Addr         { return &net.UDPAddr{} }
func (r *recorder) RemoteAddr() net.Addr        { return &net.UDPAddr{} }
func (r *recorder) WriteMsg(m *dns.Msg) error   { r.msg = m; return nil }
func (r *recorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *recorder) Close() error                { return nil }
func (r *recorder) TsigStatus() error           { return nil }
func (r *recorder) TsigTimersOnly(bool)         {}
func (r *recorder) Hijack()                     {}

func ask(t *testing.T, h dns.Handler, name string, qtype uint16) *dns.Msg {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), qtype)
	var w recorder
	h.ServeDNS(&w, q)
	if w.msg == nil {
		t.Fatalf("%s: no reply", name)
	}
	return w.msg
}

func TestDNSHandler(t *testing.T) {
	h := dnsHandler([]DNSRecord{
		{Name: "api.corp.lab", Type: "A", Value: "10.1.0.2"},
		{Name: "api.corp.lab", Type: "AAAA", Value: "fd00::2"},
		{Name: "www.corp.lab", Type: "CNAME", Value: "api.corp.lab"},
		{Name: "broken.corp.lab", Rcode: "servfail"},
		{Name: "gone.corp.lab", Rcode: "nxdomain"},
	}, func(string, ...any) {})

	cases := []struct {
		name  string
		qtype uint16
		rcode int
		want  []string // answer records, as text
	}{
		{"api.corp.lab", dns.TypeA, dns.RcodeSuccess, []string{"api.corp.lab.\t60\tIN\tA\t10.1.0.2"}},
		{"API.corp.lab", dns.TypeA, dns.RcodeSuccess, []string{"api.corp.lab.\t60\tIN\tA\t10.1.0.2"}},
		{"api.corp.lab", dns.TypeAAAA, dns.RcodeSuccess, []string{"api.corp.lab.\t60\tIN\tAAAA\tfd00::2"}},
		{"www.corp.lab", dns.TypeA, dns.RcodeSuccess, []string{"www.corp.lab.\t60\tIN\tCNAME\tapi.corp.lab.", "api.corp.lab.\t60\tIN\tA\t10.1.0.2"}},
		{"www.corp.lab", dns.TypeMX, dns.RcodeSuccess, []string{"www.corp.lab.\t60\tIN\tCNAME\tapi.corp.lab."}},
		{"api.corp.lab", dns.TypeMX, dns.RcodeSuccess, nil}, // the name exists: NOERROR, no data
		{"nosuch.corp.lab", dns.TypeA, dns.RcodeNameError, nil},
		{"broken.corp.lab", dns.TypeA, dns.RcodeServerFailure, nil},
		{"gone.corp.lab", dns.TypeA, dns.RcodeNameError, nil},
	}
	for _, tc := range cases {
		m := ask(t, h, tc.name, tc.qtype)
		if m.Rcode != tc.rcode {
			t.Errorf("%s %s: rcode %s, want %s", tc.name, dns.TypeToString[tc.qtype], dns.RcodeToString[m.Rcode], dns.RcodeToString[tc.rcode])
		}
		if !m.Authoritative {
			t.Errorf("%s: not authoritative", tc.name)
		}
		var got []string
		for _, rr := range m.Answer {
			got = append(got, rr.String())
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%s %s answers (-want +got):\n%s", tc.name, dns.TypeToString[tc.qtype], diff)
		}
	}
}

// TestDNSHandlerDelays: a delayed name answers no sooner than its delay,
// and the delay holds back that name only: with another name stuck for an
// hour, every undelayed name still answers (were the delay shared, the
// test would hang).
func TestDNSHandlerDelays(t *testing.T) {
	const delay = 50 * time.Millisecond
	h := dnsHandler([]DNSRecord{
		{Name: "api.corp.lab", Type: "A", Value: "10.1.0.2"},
		{Name: "slow.corp.lab", Type: "A", Value: "10.1.0.3", Delay: labs.Duration(delay)},
		{Name: "stuck.corp.lab", Type: "A", Value: "10.1.0.4", Delay: labs.Duration(time.Hour)},
		{Name: "broken.corp.lab", Rcode: "servfail"},
	}, func(string, ...any) {})

	stuck := make(chan *dns.Msg, 1)
	go func() {
		q := new(dns.Msg)
		q.SetQuestion("stuck.corp.lab.", dns.TypeA)
		var w recorder
		h.ServeDNS(&w, q)
		stuck <- w.msg
	}()

	start := time.Now()
	m := ask(t, h, "slow.corp.lab", dns.TypeA)
	if took := time.Since(start); took < delay {
		t.Errorf("slow.corp.lab answered after %s, before its %s delay", took, delay)
	}
	if len(m.Answer) != 1 || m.Rcode != dns.RcodeSuccess {
		t.Errorf("slow.corp.lab: %s %v", dns.RcodeToString[m.Rcode], m.Answer)
	}
	for _, name := range []string{"api.corp.lab", "broken.corp.lab", "nosuch.corp.lab"} {
		ask(t, h, name, dns.TypeA)
	}
	select {
	case m := <-stuck:
		t.Errorf("stuck.corp.lab answered before its hour-long delay: %v", m)
	default:
	}
}

func TestRewriteResolvConf(t *testing.T) {
	old := []byte("# lab\nsearch corp.lab\nnameserver 10.1.0.2\noptions timeout:1 attempts:1\n")
	got := string(rewriteResolvConf(old, &DNSParams{Nameservers: []string{"192.0.2.53", "10.1.0.2"}}))
	want := "# lab\nsearch corp.lab\noptions timeout:1 attempts:1\nnameserver 192.0.2.53\nnameserver 10.1.0.2\n"
	if got != want {
		t.Errorf("nameservers:\n%s\nwant\n%s", got, want)
	}
	got = string(rewriteResolvConf(old, &DNSParams{Search: []string{"old.lab"}}))
	if ns, search := resolvFields([]byte(got)); ns != "10.1.0.2" || search != "old.lab" {
		t.Errorf("search: nameserver %q search %q in\n%s", ns, search, got)
	}
	if strings.Count(got, "search") != 1 {
		t.Errorf("search line duplicated:\n%s", got)
	}
}

func TestRewriteNSSwitch(t *testing.T) {
	old := []byte("passwd: files\nhosts:          files mymachines dns\nnetworks: files\n")
	got := string(rewriteNSSwitch(old, "dns files"))
	want := "passwd: files\nhosts:          dns files\nnetworks: files\n"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	if got := string(rewriteNSSwitch([]byte("passwd: files\n"), "files dns")); !strings.Contains(got, "hosts:          files dns\n") {
		t.Errorf("no hosts line added:\n%s", got)
	}
}

func TestListenFrom(t *testing.T) {
	p := &svcParams{Config: "/etc/api.conf"}
	got, err := p.listenFrom("# api\nlisten 0.0.0.0:8080\n")
	if err != nil || got != "0.0.0.0:8080" {
		t.Errorf("listenFrom = %q, %v", got, err)
	}
	if _, err := p.listenFrom("# nothing\n"); err == nil {
		t.Error("no listen line accepted")
	}
}

func TestParamsValidate(t *testing.T) {
	type validator interface{ Validate() error }
	cases := []struct {
		name  string
		p     validator
		field string // "" = valid
	}{
		{"service ok", &ServiceParams{Type: "http", Port: 8080}, ""},
		{"service type", &ServiceParams{Type: "ftp"}, "type"},
		{"service name", &ServiceParams{Type: "http", Name: "a very long process name"}, "name"},
		{"service bind", &ServiceParams{Type: "http", Bind: "everywhere"}, "bind"},
		{"service log outside private dirs", &ServiceParams{Type: "http", Log: "/var/log/api.log"}, "log"},
		{"records on http", &ServiceParams{Type: "http", Records: []DNSRecord{{Name: "a", Value: "10.0.0.1"}}}, "records"},
		{"record value", &ServiceParams{Type: "dns", Records: []DNSRecord{{Name: "a", Value: "nope"}}}, "records[0]"},
		{"record AAAA v4", &ServiceParams{Type: "dns", Records: []DNSRecord{{Name: "a", Type: "AAAA", Value: "10.0.0.1"}}}, "records[0]"},
		{"record rcode", &ServiceParams{Type: "dns", Records: []DNSRecord{{Name: "a", Rcode: "timeout"}}}, "records[0]"},
		{"record template", &ServiceParams{Type: "dns", Records: []DNSRecord{{Name: "a", Value: `{{ fact "x.addr" }}`}}}, ""},
		{"route ok", &RouteParams{Mode: "no-default"}, ""},
		{"route mode", &RouteParams{Mode: "gone"}, "mode"},
		{"blackhole needs to", &RouteParams{Mode: "blackhole"}, "to"},
		{"blackhole prefix", &RouteParams{Mode: "blackhole", To: "10.0.0.0/33"}, "to"},
		{"blackhole address", &RouteParams{Mode: "prohibit", To: "10.0.0.1"}, ""},
		{"gateway", &RouteParams{Mode: "wrong-gateway", Gateway: "router"}, "gateway"},
		{"link ok", &LinkParams{Mode: "down", Dev: "eth1"}, ""},
		{"link dev", &LinkParams{Mode: "down", Dev: "eth 1"}, "dev"},
		{"link addr", &LinkParams{Mode: "wrong-addr", Dev: "eth0"}, "addr"},
		{"dns empty", &DNSParams{}, "nameservers"},
		{"dns nameserver", &DNSParams{Nameservers: []string{"srv"}}, "nameservers"},
		{"dns search", &DNSParams{Search: []string{"bad domain"}}, "search"},
		{"dns option", &DNSParams{Options: []string{"timeout 1"}}, "options"},
		{"dns hosts", &DNSParams{Hosts: map[string]string{"api": "old"}}, "hosts"},
		{"dns nsswitch", &DNSParams{NSSwitch: "dns; rm"}, "nsswitch"},
		{"dns ok", &DNSParams{Hosts: map[string]string{"api.corp.lab": "192.0.2.1"}, NSSwitch: "dns files"}, ""},
		{"squatter port", &ListenerParams{Mode: "squatter", Name: "x"}, "port"},
		{"localhost service", &ListenerParams{Mode: "localhost"}, "service"},
		{"wrong-port port", &ListenerParams{Mode: "wrong-port", Service: "api"}, "port"},
		{"listener ok", &ListenerParams{Mode: "squatter", Port: 80, Name: "backup-agent"}, ""},
		{"firewall ok", &FirewallParams{Port: 8080, Proto: "tcp", Action: "drop", Chain: "input", Table: "filter"}, ""},
		{"firewall action", &FirewallParams{Port: 8080, Proto: "tcp", Action: "accept", Chain: "input", Table: "filter"}, "action"},
		{"firewall table", &FirewallParams{Port: 8080, Proto: "tcp", Action: "drop", Chain: "input", Table: "x; flush ruleset"}, "table"},
	}
	for _, tc := range cases {
		err := tc.p.Validate()
		var pe *labs.ParamError
		switch {
		case tc.field == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.field != "" && err == nil:
			t.Errorf("%s: validated, want an error on %s", tc.name, tc.field)
		case tc.field != "" && (!asParamError(err, &pe) || pe.Field != tc.field):
			t.Errorf("%s: error %v, want one on field %s", tc.name, err, tc.field)
		}
	}
}

func asParamError(err error, pe **labs.ParamError) bool {
	p, ok := err.(*labs.ParamError)
	*pe = p
	return ok
}

func TestFirewallRuleset(t *testing.T) {
	p := &FirewallParams{Port: 8080, Proto: "tcp", Action: "reject", Chain: "input", Table: "filter"}
	got := p.ruleset()
	for _, want := range []string{"table inet filter", "type filter hook input", "tcp dport 8080 counter reject"} {
		if !strings.Contains(got, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, got)
		}
	}
}
