package netfault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"

	"github.com/labctl/labctl/faults"
	"github.com/labctl/labctl/labs"
)

// Modes of net.link.
const (
	linkDown      = "down"       // the interface is administratively down
	linkWrongAddr = "wrong-addr" // its address (or prefix length) is wrong
)

// LinkParams break one interface of a host.
type LinkParams struct {
	Mode string `yaml:"mode" json:"mode" doc:"down or wrong-addr" required:"true"`
	Dev  string `yaml:"dev,omitempty" json:"dev,omitempty" doc:"the interface (default eth0)"`
	Addr string `yaml:"addr,omitempty" json:"addr,omitempty" doc:"wrong-addr: the address/prefix it gets instead, e.g. 10.9.9.9/24 or the right address with /30" template:"true"`
}

var ifName = regexp.MustCompile(`^[a-zA-Z0-9_.-]{1,15}$`)

// Validate checks what can be checked before facts are known.
func (p *LinkParams) Validate() error {
	if !ifName.MatchString(p.Dev) {
		return &labs.ParamError{Field: "dev", Msg: fmt.Sprintf("%q is not an interface name", p.Dev)}
	}
	switch p.Mode {
	case linkDown:
	case linkWrongAddr:
		if p.Addr == "" {
			return &labs.ParamError{Field: "addr", Msg: "wrong-addr needs the wrong address, e.g. 10.9.9.9/24"}
		}
		if !strings.Contains(p.Addr, "{{") {
			if _, _, err := net.ParseCIDR(p.Addr); err != nil {
				return &labs.ParamError{Field: "addr", Msg: fmt.Sprintf("%q is not address/prefix-length", p.Addr)}
			}
		}
	default:
		return &labs.ParamError{Field: "mode", Msg: fmt.Sprintf("%q is not down or wrong-addr", p.Mode)}
	}
	return nil
}

// linkState is what Revert needs.
type linkState struct {
	Mode  string   `json:"mode"`
	Dev   string   `json:"dev"`
	Addrs []string `json:"addrs,omitempty"` // the device's addresses before
	Wrong string   `json:"wrong,omitempty"`
}

type linkKind struct{}

func init() {
	faults.Register(labs.FaultKind{
		Name:      "net.link",
		Doc:       "breaks an interface of a host: down, or a wrong address / prefix length",
		NewParams: func() any { return &LinkParams{Dev: "eth0"} },
		Facts: []labs.FactSpec{
			{Name: "dev", Doc: "the broken interface"},
			{Name: "addr", Doc: "its right address/prefix"},
			{Name: "wrong_addr", Doc: "wrong-addr: the address/prefix it has instead"},
		},
	}, linkKind{})
}

func (linkKind) Apply(ctx context.Context, env faults.Env, f *labs.Fault, params any) (*faults.Applied, error) {
	p := params.(*LinkParams)
	h, err := env.Host(f.Host)
	if err != nil {
		return nil, err
	}
	st := linkState{Mode: p.Mode, Dev: p.Dev}
	var wrong *netlink.Addr
	if p.Mode == linkWrongAddr {
		if wrong, err = netlink.ParseAddr(p.Addr); err != nil {
			return nil, fmt.Errorf("addr: %q: %w", p.Addr, err)
		}
		st.Wrong = wrong.IPNet.String()
	}
	err = withHandle(h, func(nh *netlink.Handle) error {
		l, err := nh.LinkByName(p.Dev)
		if err != nil {
			return fmt.Errorf("host %s: interface %s: %w", h.Name(), p.Dev, err)
		}
		addrs, err := nh.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			st.Addrs = append(st.Addrs, a.IPNet.String())
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	applied := &faults.Applied{State: mustJSON(st), Facts: map[string]string{"dev": p.Dev}}
	if len(st.Addrs) > 0 {
		applied.Facts["addr"] = st.Addrs[0]
	}
	if wrong != nil {
		applied.Facts["wrong_addr"] = st.Wrong
	}
	err = withHandle(h, func(nh *netlink.Handle) error {
		l, err := nh.LinkByName(p.Dev)
		if err != nil {
			return err
		}
		if p.Mode == linkDown {
			return nh.LinkSetDown(l)
		}
		for _, s := range st.Addrs {
			a, _ := netlink.ParseAddr(s)
			if err := nh.AddrDel(l, a); err != nil && !errors.Is(err, syscall.EADDRNOTAVAIL) {
				return err
			}
		}
		return nh.AddrAdd(l, wrong)
	})
	if err != nil {
		return applied, fmt.Errorf("host %s: %s %s: %w", h.Name(), p.Mode, p.Dev, err)
	}
	return applied, poll(ctx, p.Dev+" "+p.Mode+" on "+h.Name(), func() (bool, error) {
		var done bool
		err := withHandle(h, func(nh *netlink.Handle) error {
			l, err := nh.LinkByName(p.Dev)
			if err != nil {
				return err
			}
			if p.Mode == linkDown {
				done = l.Attrs().Flags&net.FlagUp == 0
				return nil
			}
			addrs, err := nh.AddrList(l, netlink.FAMILY_V4)
			done = err == nil && len(addrs) == 1 && addrs[0].IPNet.String() == st.Wrong
			return err
		})
		return done, err
	})
}

func (linkKind) Revert(ctx context.Context, env faults.Env, f *labs.Fault, state json.RawMessage) error {
	if len(state) == 0 {
		return nil
	}
	var st linkState
	if err := json.Unmarshal(state, &st); err != nil {
		return fmt.Errorf("link state: %w", err)
	}
	h, err := env.Host(f.Host)
	if err != nil || hostGone(h) {
		return nil
	}
	return withHandle(h, func(nh *netlink.Handle) error {
		l, err := nh.LinkByName(st.Dev)
		if err != nil {
			return nil // gone with its peer's host
		}
		if st.Wrong != "" {
			if a, err := netlink.ParseAddr(st.Wrong); err == nil {
				if err := nh.AddrDel(l, a); err != nil && !errors.Is(err, syscall.EADDRNOTAVAIL) {
					return err
				}
			}
			for _, s := range st.Addrs {
				a, err := netlink.ParseAddr(s)
				if err != nil {
					return err
				}
				if err := nh.AddrReplace(l, a); err != nil {
					return err
				}
			}
		}
		return nh.LinkSetUp(l)
	})
}
