package netfault

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"regexp"
	"sort"
	"strings"

	"github.com/labctl/labctl/faults"
	"github.com/labctl/labctl/labs"
)

// DNSParams break a host's name resolution through its own resolver
// files (resolv.conf, hosts, nsswitch.conf in the host's private /etc).
// Every part that is set replaces the file's corresponding lines.
type DNSParams struct {
	Nameservers []string          `yaml:"nameservers,omitempty" json:"nameservers,omitempty" doc:"resolv.conf nameserver lines, in order (a dead one: an address where nothing answers)" template:"true"`
	Search      []string          `yaml:"search,omitempty" json:"search,omitempty" doc:"resolv.conf search domains"`
	Options     []string          `yaml:"options,omitempty" json:"options,omitempty" doc:"resolv.conf options, e.g. timeout:1 attempts:1"`
	Hosts       map[string]string `yaml:"hosts,omitempty" json:"hosts,omitempty" doc:"/etc/hosts entries added: name -> address (a stale entry)" template:"true"`
	NSSwitch    string            `yaml:"nsswitch,omitempty" json:"nsswitch,omitempty" doc:"the hosts: line of nsswitch.conf, e.g. 'dns files'"`
}

var (
	domainRE   = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?\.?$`)
	optionRE   = regexp.MustCompile(`^[a-z0-9-]+(:[0-9]+)?$`)
	nsswitchRE = regexp.MustCompile(`^[a-z]+( +[a-z]+| +\[[!A-Za-z=]+\])*$`)
)

// Validate checks what can be checked before facts are known.
func (p *DNSParams) Validate() error {
	if len(p.Nameservers) == 0 && len(p.Search) == 0 && len(p.Options) == 0 && len(p.Hosts) == 0 && p.NSSwitch == "" {
		return &labs.ParamError{Field: "nameservers", Msg: "set at least one of nameservers, search, options, hosts, nsswitch"}
	}
	for _, ns := range p.Nameservers {
		if !strings.Contains(ns, "{{") && net.ParseIP(ns) == nil {
			return &labs.ParamError{Field: "nameservers", Msg: fmt.Sprintf("%q is not an IP address", ns)}
		}
	}
	for _, d := range p.Search {
		if !domainRE.MatchString(d) {
			return &labs.ParamError{Field: "search", Msg: fmt.Sprintf("%q is not a domain", d)}
		}
	}
	for _, o := range p.Options {
		if !optionRE.MatchString(o) {
			return &labs.ParamError{Field: "options", Msg: fmt.Sprintf("%q is not a resolver option", o)}
		}
	}
	for name, addr := range p.Hosts {
		if !domainRE.MatchString(name) {
			return &labs.ParamError{Field: "hosts", Msg: fmt.Sprintf("%q is not a host name", name)}
		}
		if !strings.Contains(addr, "{{") && net.ParseIP(addr) == nil {
			return &labs.ParamError{Field: "hosts", Msg: fmt.Sprintf("%s: %q is not an IP address", name, addr)}
		}
	}
	if p.NSSwitch != "" && !nsswitchRE.MatchString(p.NSSwitch) {
		return &labs.ParamError{Field: "nsswitch", Msg: fmt.Sprintf("%q is not a list of sources like 'dns files'", p.NSSwitch)}
	}
	return nil
}

const (
	resolvConf   = "/etc/resolv.conf"
	etcHosts     = "/etc/hosts"
	nsswitchConf = "/etc/nsswitch.conf"
)

// dnsState holds the files' contents before, to put them back.
type dnsState struct {
	Before map[string]string `json:"before"`
}

type dnsKind struct{}

func init() {
	faults.Register(labs.FaultKind{
		Name:      "net.dns",
		Doc:       "breaks name resolution in a host through its resolv.conf (dead or slow nameservers, wrong search domain), a stale /etc/hosts entry or the nsswitch hosts order",
		NewParams: func() any { return &DNSParams{} },
		Facts: []labs.FactSpec{
			{Name: "nameserver", Doc: "the first nameserver line after the fault"},
			{Name: "search", Doc: "the search domains after the fault"},
			{Name: "stale_name", Doc: "hosts: the (first) name given a hosts entry"},
			{Name: "stale_addr", Doc: "hosts: the address that entry gives"},
		},
	}, dnsKind{})
}

func (dnsKind) Apply(ctx context.Context, env faults.Env, f *labs.Fault, params any) (*faults.Applied, error) {
	p := params.(*DNSParams)
	for _, ns := range p.Nameservers {
		if net.ParseIP(ns) == nil {
			return nil, fmt.Errorf("nameservers: %q is not an IP address", ns)
		}
	}
	for name, addr := range p.Hosts {
		if net.ParseIP(addr) == nil {
			return nil, fmt.Errorf("hosts: %s: %q is not an IP address", name, addr)
		}
	}
	h, err := env.Host(f.Host)
	if err != nil {
		return nil, err
	}
	st := dnsState{Before: map[string]string{}}
	want := map[string][]byte{}
	facts := map[string]string{}

	if len(p.Nameservers) > 0 || len(p.Search) > 0 || len(p.Options) > 0 {
		old, err := readHostFile(ctx, h, resolvConf)
		if err != nil {
			return nil, err
		}
		st.Before[resolvConf] = string(old)
		want[resolvConf] = rewriteResolvConf(old, p)
	}
	if len(p.Hosts) > 0 {
		old, err := readHostFile(ctx, h, etcHosts)
		if err != nil {
			return nil, err
		}
		st.Before[etcHosts] = string(old)
		names := make([]string, 0, len(p.Hosts))
		for n := range p.Hosts {
			names = append(names, n)
		}
		sort.Strings(names)
		var b bytes.Buffer
		b.Write(old)
		if len(old) > 0 && !bytes.HasSuffix(old, []byte("\n")) {
			b.WriteByte('\n')
		}
		for _, n := range names {
			fmt.Fprintf(&b, "%s\t%s\n", p.Hosts[n], n)
		}
		want[etcHosts] = b.Bytes()
		facts["stale_name"], facts["stale_addr"] = names[0], p.Hosts[names[0]]
	}
	if p.NSSwitch != "" {
		old, err := readHostFile(ctx, h, nsswitchConf)
		if err != nil {
			return nil, err
		}
		st.Before[nsswitchConf] = string(old)
		want[nsswitchConf] = rewriteNSSwitch(old, p.NSSwitch)
	}
	applied := &faults.Applied{State: mustJSON(st), Facts: facts}
	for path, content := range want {
		if err := writeHostFile(ctx, h, path, content); err != nil {
			return applied, err
		}
	}
	if c, ok := want[resolvConf]; ok {
		facts["nameserver"], facts["search"] = resolvFields(c)
	}
	// Observable: the host's resolver reads exactly these files now.
	return applied, poll(ctx, "resolver files on "+h.Name(), func() (bool, error) {
		for path, content := range want {
			got, err := readHostFile(ctx, h, path)
			if err != nil || !bytes.Equal(got, content) {
				return false, err
			}
		}
		return true, nil
	})
}

// rewriteResolvConf replaces the lines the params set and keeps the rest.
func rewriteResolvConf(old []byte, p *DNSParams) []byte {
	var b bytes.Buffer
	for _, line := range strings.Split(strings.TrimRight(string(old), "\n"), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 {
			switch {
			case f[0] == "nameserver" && len(p.Nameservers) > 0,
				(f[0] == "search" || f[0] == "domain") && len(p.Search) > 0,
				f[0] == "options" && len(p.Options) > 0:
				continue
			}
		}
		if line != "" {
			b.WriteString(line + "\n")
		}
	}
	if len(p.Search) > 0 {
		b.WriteString("search " + strings.Join(p.Search, " ") + "\n")
	}
	for _, ns := range p.Nameservers {
		b.WriteString("nameserver " + ns + "\n")
	}
	if len(p.Options) > 0 {
		b.WriteString("options " + strings.Join(p.Options, " ") + "\n")
	}
	return b.Bytes()
}

// resolvFields returns the first nameserver and the search list.
func resolvFields(c []byte) (nameserver, search string) {
	for _, line := range strings.Split(string(c), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && f[0] == "nameserver" && nameserver == "":
			nameserver = f[1]
		case len(f) >= 2 && f[0] == "search":
			search = strings.Join(f[1:], " ")
		}
	}
	return nameserver, search
}

// rewriteNSSwitch replaces (or adds) the hosts: line.
func rewriteNSSwitch(old []byte, sources string) []byte {
	var b bytes.Buffer
	done := false
	for _, line := range strings.Split(strings.TrimRight(string(old), "\n"), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "hosts:") {
			line = "hosts:          " + sources
			done = true
		}
		b.WriteString(line + "\n")
	}
	if !done {
		b.WriteString("hosts:          " + sources + "\n")
	}
	return b.Bytes()
}

func (dnsKind) Revert(ctx context.Context, env faults.Env, f *labs.Fault, state json.RawMessage) error {
	if len(state) == 0 {
		return nil
	}
	var st dnsState
	if err := json.Unmarshal(state, &st); err != nil {
		return fmt.Errorf("dns state: %w", err)
	}
	h, err := env.Host(f.Host)
	if err != nil || hostGone(h) {
		return nil
	}
	for path, content := range st.Before {
		if err := writeHostFile(ctx, h, path, []byte(content)); err != nil {
			return err
		}
	}
	return nil
}
