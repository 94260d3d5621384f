package checks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/labctl/labctl/labs"
)

// RouteParams ask the host's kernel how it would route to an address
// (`ip route get TO`), optionally requiring a gateway or device.
type RouteParams struct {
	To  string `yaml:"to" json:"to" doc:"destination address" required:"true" template:"true"`
	Via string `yaml:"via,omitempty" json:"via,omitempty" doc:"the gateway the route must use (default: any, including none)" template:"true"`
	Dev string `yaml:"dev,omitempty" json:"dev,omitempty" doc:"the device the route must use (default: any)" template:"true"`
	// Routed false passes when the kernel has NO usable route.
	Routed *bool `yaml:"routed,omitempty" json:"routed,omitempty" doc:"a usable route exists (default true); false: none does (no route, blackhole, unreachable, prohibit)"`
}

// Validate checks what can be checked before facts are known.
func (p *RouteParams) Validate() error {
	if !strings.Contains(p.To, "{{") && net.ParseIP(p.To) == nil {
		return &labs.ParamError{Field: "to", Msg: fmt.Sprintf("%q is not an IP address", p.To)}
	}
	if p.Via != "" && !strings.Contains(p.Via, "{{") && net.ParseIP(p.Via) == nil {
		return &labs.ParamError{Field: "via", Msg: fmt.Sprintf("%q is not an IP address", p.Via)}
	}
	if p.Routed != nil && !*p.Routed && (p.Via != "" || p.Dev != "") {
		return &labs.ParamError{Field: "routed", Msg: "routed: false cannot be combined with via or dev"}
	}
	return nil
}

type routeProber struct{}

func init() {
	Register(labs.ProbeKind{
		Name: "route",
		Doc:  "asks the host's kernel for its route to an address (ip route get): routed at all, via an expected gateway, out an expected device",
		NewParams: func() any {
			routed := true
			return &RouteParams{Routed: &routed}
		},
	}, routeProber{})
}

func (routeProber) Probe(ctx context.Context, t Target, host string, params any) Result {
	p := params.(*RouteParams)
	dst := net.ParseIP(strings.TrimSpace(p.To))
	if dst == nil {
		return errorResult(fmt.Errorf("to: %q is not an IP address", p.To))
	}
	var via net.IP
	if p.Via != "" {
		if via = net.ParseIP(strings.TrimSpace(p.Via)); via == nil {
			return errorResult(fmt.Errorf("via: %q is not an IP address", p.Via))
		}
	}
	wantRouted := p.Routed == nil || *p.Routed
	nsPath, err := t.NetNSPath(host)
	if err != nil {
		return errorResult(fmt.Errorf("host %s: %w", host, err))
	}
	got, err := routeGet(nsPath, dst)
	if err != nil {
		return errorResult(err)
	}
	res := Result{Seen: got.String(), Wanted: describeWantedRoute(dst, via, p.Dev, wantRouted)}
	switch {
	case !wantRouted && !got.usable():
		res.Pass, res.Message = true, fmt.Sprintf("%s has no usable route to %s, as expected", host, dst)
	case !wantRouted:
		res.Message = fmt.Sprintf("%s still routes to %s", host, dst)
	case !got.usable():
		res.Message = fmt.Sprintf("%s has no usable route to %s (%s)", host, dst, got.problem)
	case via != nil && !via.Equal(got.gw):
		res.Message = fmt.Sprintf("%s routes to %s via %s, not via %s", host, dst, orDirect(got.gw), via)
	case p.Dev != "" && p.Dev != got.dev:
		res.Message = fmt.Sprintf("%s routes to %s out of %s, not %s", host, dst, got.dev, p.Dev)
	default:
		res.Pass, res.Message = true, fmt.Sprintf("%s routes to %s as expected", host, dst)
	}
	return res
}

// routeAnswer is the kernel's answer to `ip route get`.
type routeAnswer struct {
	dst     net.IP
	gw      net.IP
	dev     string
	problem string // why there is no usable route, "" if there is one
}

func (r routeAnswer) usable() bool { return r.problem == "" }

func (r routeAnswer) String() string {
	if !r.usable() {
		return fmt.Sprintf("%s: %s", r.dst, r.problem)
	}
	s := r.dst.String()
	if r.gw != nil {
		s += " via " + r.gw.String()
	}
	return s + " dev " + r.dev
}

func orDirect(gw net.IP) string {
	if gw == nil {
		return "no gateway (on-link)"
	}
	return gw.String()
}

func describeWantedRoute(dst, via net.IP, dev string, routed bool) string {
	if !routed {
		return "no usable route to " + dst.String()
	}
	s := "a route to " + dst.String()
	if via != nil {
		s += " via " + via.String()
	}
	if dev != "" {
		s += " dev " + dev
	}
	return s
}

// routeGet asks the kernel of the namespace at nsPath (RTM_GETROUTE over
// a netlink socket opened in that namespace: no thread switches).
func routeGet(nsPath string, dst net.IP) (routeAnswer, error) {
	ans := routeAnswer{dst: dst}
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return ans, fmt.Errorf("open network namespace %s: %w", nsPath, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return ans, fmt.Errorf("netlink in %s: %w", nsPath, err)
	}
	defer h.Close()
	routes, err := h.RouteGet(dst)
	switch {
	case errors.Is(err, syscall.ENETUNREACH):
		ans.problem = "network is unreachable"
		return ans, nil
	case errors.Is(err, syscall.EHOSTUNREACH):
		ans.problem = "no route to host (unreachable route)"
		return ans, nil
	case errors.Is(err, syscall.EINVAL):
		ans.problem = "blackhole route"
		return ans, nil
	case errors.Is(err, syscall.EACCES):
		ans.problem = "prohibited route"
		return ans, nil
	case err != nil:
		return ans, fmt.Errorf("route get %s: %w", dst, err)
	case len(routes) == 0:
		ans.problem = "no route"
		return ans, nil
	}
	r := routes[0]
	switch r.Type {
	case rtnBlackhole:
		ans.problem = "blackhole route"
		return ans, nil
	case rtnUnreachable:
		ans.problem = "unreachable route"
		return ans, nil
	case rtnProhibit:
		ans.problem = "prohibited route"
		return ans, nil
	}
	ans.gw = r.Gw
	if l, err := h.LinkByIndex(r.LinkIndex); err == nil {
		ans.dev = l.Attrs().Name
	}
	return ans, nil
}
