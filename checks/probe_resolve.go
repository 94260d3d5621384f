package checks

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/labctl/labctl/labs"
)

// ResolveParams resolves a name the way the host's programs do.
type ResolveParams struct {
	Name       string        `yaml:"name" json:"name" doc:"the name to resolve" required:"true" template:"true"`
	ExpectAddr string        `yaml:"expect_addr,omitempty" json:"expect_addr,omitempty" doc:"one of the addresses must be this one" template:"true"`
	Absent     bool          `yaml:"absent,omitempty" json:"absent,omitempty" doc:"pass when the name does NOT resolve"`
	Timeout    labs.Duration `yaml:"timeout,omitempty" json:"timeout,omitempty" doc:"how long resolution may take (default 5s)"`
}

// Validate checks what can be checked before facts are known.
func (p *ResolveParams) Validate() error {
	if strings.TrimSpace(p.Name) == "" {
		return &labs.ParamError{Field: "name", Msg: "must not be empty"}
	}
	if p.Absent && p.ExpectAddr != "" {
		return &labs.ParamError{Field: "absent", Msg: "cannot be combined with expect_addr"}
	}
	if p.ExpectAddr != "" && !strings.Contains(p.ExpectAddr, "{{") {
		if _, err := netip.ParseAddr(p.ExpectAddr); err != nil {
			return &labs.ParamError{Field: "expect_addr", Msg: fmt.Sprintf("%q is not an IP address", p.ExpectAddr)}
		}
	}
	if p.Timeout <= 0 {
		return &labs.ParamError{Field: "timeout", Msg: "must be positive"}
	}
	return nil
}

type resolveProber struct{}

func init() {
	Register(labs.ProbeKind{
		Name: "resolve",
		Doc:  "resolves a name inside the host with its own resolv.conf, hosts file and nsswitch (getent ahosts)",
		NewParams: func() any {
			return &ResolveParams{Timeout: labs.Duration(5 * time.Second)}
		},
	}, resolveProber{})
}

func (resolveProber) Probe(ctx context.Context, t Target, host string, params any) Result {
	p := params.(*ResolveParams)
	timeout := p.Timeout.D()
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	wanted := p.Name + " resolves"
	switch {
	case p.Absent:
		wanted = p.Name + " does not resolve"
	case p.ExpectAddr != "":
		wanted += " to " + p.ExpectAddr
	}
	addrs, err := resolveInHost(ctx, t, host, p.Name, timeout)
	var notFound *lookupError
	if err != nil && !errors.As(err, &notFound) {
		return errorResult(err)
	}
	res := Result{Wanted: wanted}
	if err != nil {
		res.Seen = err.Error()
		if p.Absent && notFound.notFound {
			res.Pass, res.Message = true, p.Name+" does not resolve"
			return res
		}
		res.Message = fmt.Sprintf("%s: %s", p.Name, notFound.reason())
		return res
	}
	res.Seen = p.Name + " → " + strings.Join(addrs, ", ")
	switch {
	case p.Absent:
		res.Message = p.Name + " still resolves"
	case p.ExpectAddr != "" && !containsAddr(addrs, p.ExpectAddr):
		res.Message = p.Name + " resolves to other addresses"
	default:
		res.Pass, res.Message = true, p.Name+" resolves as expected"
	}
	return res
}

// lookupError is a failed resolution inside a host, as opposed to a
// failure to run the resolver at all.
type lookupError struct {
	name     string
	notFound bool // getent's "key not found" (NXDOMAIN, no such entry)
	timedOut bool
	detail   string
}

func (e *lookupError) Error() string {
	return fmt.Sprintf("resolving %s: %s", e.name, e.reason())
}

func (e *lookupError) reason() string {
	switch {
	case e.timedOut:
		return "resolution timed out"
	case e.notFound:
		return "name not found"
	case e.detail != "":
		return "resolution failed: " + e.detail
	}
	return "resolution failed"
}

// resolveInHost runs `getent ahosts NAME` inside the host, so the host's
// own /etc/hosts, resolv.conf and nsswitch.conf (in its mount namespace)
// decide, exactly as for the learner's programs. It returns the distinct
// addresses in getent's order, or a *lookupError.
func resolveInHost(ctx context.Context, t Target, host, name string, timeout time.Duration) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd, err := t.Command(ctx, host, "getent", "ahosts", name)
	if err != nil {
		return nil, fmt.Errorf("enter host %s: %w", host, err)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := runBounded(cmd)
	if runErr != nil {
		if ctx.Err() != nil {
			return nil, &lookupError{name: name, timedOut: true}
		}
		var exitErr *exec.ExitError
		if !errors.As(runErr, &exitErr) {
			return nil, fmt.Errorf("run getent in host %s: %w", host, runErr)
		}
		// getent(1): exit 2 means one or more keys were not found.
		return nil, &lookupError{name: name, notFound: exitErr.ExitCode() == 2,
			detail: strings.TrimSpace(stderr.String())}
	}
	var addrs []string
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if _, err := netip.ParseAddr(f[0]); err == nil && !slices.Contains(addrs, f[0]) {
			addrs = append(addrs, f[0])
		}
	}
	if len(addrs) == 0 {
		return nil, &lookupError{name: name, notFound: true}
	}
	return addrs, nil
}

// containsAddr compares addresses by value, so ::ffff:10.0.0.1 style or
// differently written IPv6 addresses still match.
func containsAddr(addrs []string, want string) bool {
	w, err := netip.ParseAddr(strings.TrimSpace(want))
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if got, err := netip.ParseAddr(a); err == nil && got.Unmap() == w.Unmap() {
			return true
		}
	}
	return false
}
