package netfault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"

	"github.com/labctl/labctl/faults"
	"github.com/labctl/labctl/labs"
)

// Modes of net.route.
const (
	routeNoDefault    = "no-default"    // the default route is deleted
	routeWrongGateway = "wrong-gateway" // the default route points at an address nobody has
	routeBlackhole    = "blackhole"     // a blackhole route to a prefix: "invalid argument"
	routeUnreachable  = "unreachable"   // an unreachable route: "no route to host"
	routeProhibit     = "prohibit"      // a prohibit route: "permission denied"
	routeNoForward    = "no-forward"    // ip_forward=0 on a router: packets silently dropped
)

// RouteParams break a host's routing.
type RouteParams struct {
	Mode    string `yaml:"mode" json:"mode" doc:"no-default, wrong-gateway, blackhole, unreachable, prohibit or no-forward" required:"true"`
	To      string `yaml:"to,omitempty" json:"to,omitempty" doc:"blackhole/unreachable/prohibit: the prefix (an address means /32)" template:"true"`
	Gateway string `yaml:"gateway,omitempty" json:"gateway,omitempty" doc:"wrong-gateway: the wrong gateway (default: the highest address of the gateway's subnet)" template:"true"`
}

// Validate checks what can be checked before facts are known.
func (p *RouteParams) Validate() error {
	switch p.Mode {
	case routeNoDefault, routeNoForward:
	case routeWrongGateway:
		if p.Gateway != "" && !strings.Contains(p.Gateway, "{{") && net.ParseIP(p.Gateway) == nil {
			return &labs.ParamError{Field: "gateway", Msg: fmt.Sprintf("%q is not an IP address", p.Gateway)}
		}
	case routeBlackhole, routeUnreachable, routeProhibit:
		if p.To == "" {
			return &labs.ParamError{Field: "to", Msg: "mode " + p.Mode + " needs a destination prefix"}
		}
		if !strings.Contains(p.To, "{{") {
			if _, err := parsePrefix(p.To); err != nil {
				return &labs.ParamError{Field: "to", Msg: err.Error()}
			}
		}
	default:
		return &labs.ParamError{Field: "mode", Msg: fmt.Sprintf("%q is not one of no-default, wrong-gateway, blackhole, unreachable, prohibit, no-forward", p.Mode)}
	}
	return nil
}

// parsePrefix accepts an IPv4 prefix or a single address (as /32).
func parsePrefix(s string) (*net.IPNet, error) {
	if ip := net.ParseIP(s); ip != nil && ip.To4() != nil {
		return &net.IPNet{IP: ip.To4(), Mask: net.CIDRMask(32, 32)}, nil
	}
	_, n, err := net.ParseCIDR(s)
	if err != nil || n.IP.To4() == nil {
		return nil, fmt.Errorf("%q is not an IPv4 address or prefix", s)
	}
	return n, nil
}

// routeState is what Revert needs.
type routeState struct {
	Mode    string `json:"mode"`
	Dst     string `json:"dst,omitempty"`      // the route's destination
	Gateway string `json:"gateway,omitempty"`  // the original default gateway
	LinkIdx int    `json:"link_idx,omitempty"` // its device
	Type    int    `json:"type,omitempty"`     // blackhole etc.
}

type routeKind struct{}

func init() {
	faults.Register(labs.FaultKind{
		Name:      "net.route",
		Doc:       "breaks routing inside a host: no default route, a wrong gateway, a blackhole/unreachable/prohibit route, or a router that does not forward",
		NewParams: func() any { return &RouteParams{} },
		Facts: []labs.FactSpec{
			{Name: "gateway", Doc: "no-default: the gateway that was removed; wrong-gateway: the wrong gateway"},
			{Name: "correct_gateway", Doc: "no-default, wrong-gateway: the gateway that works"},
			{Name: "dev", Doc: "no-default, wrong-gateway: the device of the default route"},
			{Name: "prefix", Doc: "blackhole, unreachable, prohibit: the prefix routed away"},
			{Name: "host", Doc: "the host whose routing is broken"},
		},
	}, routeKind{})
}

func (routeKind) Apply(ctx context.Context, env faults.Env, f *labs.Fault, params any) (*faults.Applied, error) {
	p := params.(*RouteParams)
	h, err := env.Host(f.Host)
	if err != nil {
		return nil, err
	}
	facts := map[string]string{"host": h.Name()}
	switch p.Mode {
	case routeNoForward:
		if err := setForwarding(ctx, h, false); err != nil {
			return nil, err
		}
		return &faults.Applied{Facts: facts, State: mustJSON(routeState{Mode: p.Mode})}, nil
	case routeBlackhole, routeUnreachable, routeProhibit:
		dst, err := parsePrefix(p.To)
		if err != nil {
			return nil, fmt.Errorf("to: %w", err)
		}
		typ := map[string]int{routeBlackhole: syscall.RTN_BLACKHOLE, routeUnreachable: syscall.RTN_UNREACHABLE, routeProhibit: syscall.RTN_PROHIBIT}[p.Mode]
		st := routeState{Mode: p.Mode, Dst: dst.String(), Type: typ}
		applied := &faults.Applied{Facts: facts, State: mustJSON(st)}
		facts["prefix"] = dst.String()
		err = withHandle(h, func(nh *netlink.Handle) error {
			if err := nh.RouteAdd(&netlink.Route{Dst: dst, Type: typ}); err != nil {
				return fmt.Errorf("host %s: add %s route to %s: %w", h.Name(), p.Mode, dst, err)
			}
			return nil
		})
		if err != nil {
			return applied, err
		}
		return applied, waitRoute(ctx, h, dst.IP, func(r *netlink.Route, err error) bool { return err != nil || r.Type == typ })
	}

	// no-default and wrong-gateway both start from the default route.
	var def netlink.Route
	err = withHandle(h, func(nh *netlink.Handle) error {
		r, err := defaultRoute(nh)
		if err != nil {
			return fmt.Errorf("host %s: %w", h.Name(), err)
		}
		def = *r
		return nil
	})
	if err != nil {
		return nil, err
	}
	st := routeState{Mode: p.Mode, Gateway: def.Gw.String(), LinkIdx: def.LinkIndex}
	applied := &faults.Applied{Facts: facts, State: mustJSON(st)}
	facts["correct_gateway"] = def.Gw.String()
	var dev string
	_ = withHandle(h, func(nh *netlink.Handle) error {
		if l, err := nh.LinkByIndex(def.LinkIndex); err == nil {
			dev = l.Attrs().Name
		}
		return nil
	})
	facts["dev"] = dev
	probe := net.IPv4(192, 0, 2, 1) // TEST-NET-1: only the default route covers it
	if p.Mode == routeNoDefault {
		facts["gateway"] = def.Gw.String()
		err = withHandle(h, func(nh *netlink.Handle) error { return nh.RouteDel(&def) })
		if err != nil {
			return applied, fmt.Errorf("host %s: delete the default route: %w", h.Name(), err)
		}
		return applied, waitRoute(ctx, h, probe, func(_ *netlink.Route, err error) bool { return err != nil })
	}
	wrong, err := wrongGateway(h, p.Gateway, def)
	if err != nil {
		return applied, err
	}
	facts["gateway"] = wrong.String()
	err = withHandle(h, func(nh *netlink.Handle) error {
		r := def
		r.Gw = wrong
		return nh.RouteReplace(&r)
	})
	if err != nil {
		return applied, fmt.Errorf("host %s: point the default route at %s: %w", h.Name(), wrong, err)
	}
	return applied, waitRoute(ctx, h, probe, func(r *netlink.Route, err error) bool { return err == nil && r.Gw.Equal(wrong) })
}

// wrongGateway is the lab's wrong gateway, or the highest host address of
// the real gateway's subnet, which no lab host uses.
func wrongGateway(h faults.Host, given string, def netlink.Route) (net.IP, error) {
	if given != "" {
		ip := net.ParseIP(given)
		if ip == nil || ip.To4() == nil {
			return nil, fmt.Errorf("gateway: %q is not an IPv4 address", given)
		}
		return ip.To4(), nil
	}
	var out net.IP
	err := withHandle(h, func(nh *netlink.Handle) error {
		link, err := nh.LinkByIndex(def.LinkIndex)
		if err != nil {
			return err
		}
		addrs, err := nh.AddrList(link, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if a.IPNet.Contains(def.Gw) {
				n := a.IPNet.IP.Mask(a.IPNet.Mask).To4()
				bcast := make(net.IP, 4)
				for i := range n {
					bcast[i] = n[i] | ^a.IPNet.Mask[i]
				}
				bcast[3]--
				out = bcast
				return nil
			}
		}
		return errors.New("no address of the device covers the gateway")
	})
	if err != nil {
		return nil, fmt.Errorf("host %s: choose a wrong gateway: %w", h.Name(), err)
	}
	return out, nil
}

// defaultRoute finds the main table's IPv4 default route.
func defaultRoute(nh *netlink.Handle) (*netlink.Route, error) {
	routes, err := nh.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	for i := range routes {
		r := &routes[i]
		if (r.Dst == nil || r.Dst.IP.IsUnspecified() && maskOnes(r.Dst) == 0) && r.Gw != nil {
			return r, nil
		}
	}
	return nil, errors.New("no default route (declare one in the lab: routes: [{to: default, via: ...}])")
}

func maskOnes(n *net.IPNet) int {
	ones, _ := n.Mask.Size()
	return ones
}

// waitRoute polls `ip route get dst` inside the host until ok says the
// kernel's answer shows the fault.
func waitRoute(ctx context.Context, h faults.Host, dst net.IP, ok func(*netlink.Route, error) bool) error {
	return poll(ctx, "route to "+dst.String()+" on "+h.Name(), func() (bool, error) {
		var done bool
		err := withHandle(h, func(nh *netlink.Handle) error {
			routes, err := nh.RouteGet(dst)
			if err != nil {
				done = ok(nil, err)
				return nil
			}
			if len(routes) == 0 {
				done = ok(nil, errors.New("no route"))
				return nil
			}
			done = ok(&routes[0], nil)
			return nil
		})
		return done, err
	})
}

// setForwarding writes the host's net.ipv4.ip_forward (a per-namespace
// sysctl) from inside the host, then reads it back.
func setForwarding(ctx context.Context, h faults.Host, on bool) error {
	v := "0"
	if on {
		v = "1"
	}
	if _, err := run(ctx, h, nil, "sysctl", "-q", "-w", "net.ipv4.ip_forward="+v); err != nil {
		return err
	}
	return poll(ctx, "ip_forward="+v+" on "+h.Name(), func() (bool, error) {
		out, err := readHostFile(ctx, h, "/proc/sys/net/ipv4/ip_forward")
		return err == nil && strings.TrimSpace(string(out)) == v, err
	})
}

func (routeKind) Revert(ctx context.Context, env faults.Env, f *labs.Fault, state json.RawMessage) error {
	if len(state) == 0 {
		return nil
	}
	var st routeState
	if err := json.Unmarshal(state, &st); err != nil {
		return fmt.Errorf("route state: %w", err)
	}
	h, err := env.Host(f.Host)
	if err != nil || hostGone(h) {
		return nil
	}
	switch st.Mode {
	case routeNoForward:
		return setForwarding(ctx, h, true)
	case routeBlackhole, routeUnreachable, routeProhibit:
		_, dst, err := net.ParseCIDR(st.Dst)
		if err != nil {
			return fmt.Errorf("route state: %w", err)
		}
		return withHandle(h, func(nh *netlink.Handle) error {
			err := nh.RouteDel(&netlink.Route{Dst: dst, Type: st.Type})
			if errors.Is(err, syscall.ESRCH) || errors.Is(err, syscall.ENOENT) {
				return nil
			}
			return err
		})
	default:
		// Put the original default route back (replace: the learner may
		// have added one already).
		gw := net.ParseIP(st.Gateway)
		return withHandle(h, func(nh *netlink.Handle) error {
			if _, err := nh.LinkByIndex(st.LinkIdx); err != nil {
				return nil // the device is gone with its host
			}
			r := &netlink.Route{Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, Gw: gw, LinkIndex: st.LinkIdx}
			if err := nh.RouteReplace(r); err != nil && !errors.Is(err, syscall.ENETUNREACH) {
				return fmt.Errorf("host %s: restore the default route via %s: %w", h.Name(), gw, err)
			}
			return nil
		})
	}
}
