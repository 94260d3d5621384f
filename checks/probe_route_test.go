package checks

import (
	"testing"
)

func TestProbeRoute(t *testing.T) {
	skipUnlessRoot(t)
	tt := newTestTarget()
	startHost(t, tt, "app")
	// Everything below happens inside the host's own network namespace.
	inHost(t, tt, "app", "ip", "link", "set", "lo", "up")
	inHost(t, tt, "app", "ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1")
	inHost(t, tt, "app", "ip", "link", "set", "v0", "up")
	inHost(t, tt, "app", "ip", "link", "set", "v1", "up")
	inHost(t, tt, "app", "ip", "addr", "add", "10.77.0.1/24", "dev", "v0")
	inHost(t, tt, "app", "ip", "route", "add", "10.88.0.0/16", "via", "10.77.0.254")
	inHost(t, tt, "app", "ip", "route", "add", "blackhole", "10.99.1.0/24")
	inHost(t, tt, "app", "ip", "route", "add", "unreachable", "10.99.2.0/24")
	inHost(t, tt, "app", "ip", "route", "add", "prohibit", "10.99.3.0/24")

	routed := func(p *RouteParams) { p.Routed = ptr(false) }
	runProbeCases(t, "route", tt, "app", []probeCase[*RouteParams]{
		{"on-link", func(p *RouteParams) { p.To = "10.77.0.9"; p.Dev = "v0" }, true, "dev v0"},
		{"on-link has no gateway", func(p *RouteParams) { p.To = "10.77.0.9"; p.Via = "10.77.0.254" }, false, "dev v0"},
		{"via the expected gateway", func(p *RouteParams) { p.To = "10.88.1.1"; p.Via = "10.77.0.254" }, true, "via 10.77.0.254"},
		{"via another gateway", func(p *RouteParams) { p.To = "10.88.1.1"; p.Via = "10.77.0.1" }, false, "via 10.77.0.254"},
		{"wrong device", func(p *RouteParams) { p.To = "10.88.1.1"; p.Dev = "v1" }, false, "dev v0"},
		{"no default route", func(p *RouteParams) { p.To = "192.0.2.1" }, false, "unreachable"},
		{"no route expected", func(p *RouteParams) { p.To = "192.0.2.1"; routed(p) }, true, "unreachable"},
		{"blackhole", func(p *RouteParams) { p.To = "10.99.1.5" }, false, "blackhole"},
		{"unreachable", func(p *RouteParams) { p.To = "10.99.2.5"; routed(p) }, true, "unreachable"},
		{"prohibit", func(p *RouteParams) { p.To = "10.99.3.5"; routed(p) }, true, "prohibit"},
		{"routed but none expected", func(p *RouteParams) { p.To = "10.88.1.1"; routed(p) }, false, "via"},
	})
}

func TestRouteParamsValidate(t *testing.T) {
	bad := []RouteParams{
		{To: "not-an-ip"},
		{To: "10.0.0.1", Via: "gateway"},
		{To: "10.0.0.1", Via: "10.0.0.2", Routed: ptr(false)},
	}
	for _, p := range bad {
		if err := p.Validate(); err == nil {
			t.Errorf("%+v validated", p)
		}
	}
	good := []RouteParams{{To: "10.0.0.1"}, {To: `{{ fact "x.addr" }}`, Via: `{{ fact "r.addr" }}`, Dev: "eth0"}}
	for _, p := range good {
		if err := p.Validate(); err != nil {
			t.Errorf("%+v: %v", p, err)
		}
	}
}
