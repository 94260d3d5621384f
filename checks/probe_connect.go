package checks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netns"

	"github.com/labctl/labctl/labs"
)

// ConnectParams dials TCP from inside a host.
type ConnectParams struct {
	To      string        `yaml:"to" json:"to" doc:"address:port to dial; the address may be a name, resolved inside the host" required:"true" template:"true"`
	Timeout labs.Duration `yaml:"timeout,omitempty" json:"timeout,omitempty" doc:"how long the dial may take (default 2s)"`
	Expect  string        `yaml:"expect,omitempty" json:"expect,omitempty" doc:"open (default), refused, unreachable or timeout"`
}

// Connect outcomes, as a learner would name them.
const (
	connOpen        = "open"
	connRefused     = "refused"
	connUnreachable = "unreachable"
	connTimeout     = "timeout"
)

// Validate checks what can be checked before facts are known.
func (p *ConnectParams) Validate() error {
	switch p.Expect {
	case connOpen, connRefused, connUnreachable, connTimeout:
	default:
		return &labs.ParamError{Field: "expect", Msg: fmt.Sprintf("%q is not one of open, refused, unreachable, timeout", p.Expect)}
	}
	if !strings.Contains(p.To, "{{") {
		if _, _, err := net.SplitHostPort(p.To); err != nil {
			return &labs.ParamError{Field: "to", Msg: fmt.Sprintf("%q is not address:port", p.To)}
		}
	}
	if p.Timeout <= 0 {
		return &labs.ParamError{Field: "timeout", Msg: "must be positive"}
	}
	return nil
}

type connectProber struct{}

func init() {
	Register(labs.ProbeKind{
		Name: "connect",
		Doc:  "dials TCP from inside the host's network namespace: open, refused, unreachable or timeout",
		NewParams: func() any {
			return &ConnectParams{Timeout: labs.Duration(2 * time.Second), Expect: connOpen}
		},
	}, connectProber{})
}

func (connectProber) Probe(ctx context.Context, t Target, host string, params any) Result {
	p := params.(*ConnectParams)
	timeout := p.Timeout.D()
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	expect := p.Expect
	if expect == "" {
		expect = connOpen
	}
	hostPart, port, err := net.SplitHostPort(p.To)
	if err != nil {
		return errorResult(fmt.Errorf("to: %q is not address:port", p.To))
	}
	addr := p.To
	if _, err := netip.ParseAddr(hostPart); err != nil {
		// A name: resolve it the host's way, not with the machine's
		// resolv.conf, which knows nothing of the lab.
		addrs, err := resolveInHost(ctx, t, host, hostPart, timeout)
		if err != nil {
			var le *lookupError
			if errors.As(err, &le) {
				return Result{Seen: err.Error(), Wanted: p.To + " " + expect,
					Message: fmt.Sprintf("%s does not resolve inside %s", hostPart, host)}
			}
			return errorResult(err)
		}
		addr = net.JoinHostPort(addrs[0], port)
	}
	nsPath, err := t.NetNSPath(host)
	if err != nil {
		return errorResult(fmt.Errorf("host %s: %w", host, err))
	}
	got, detail, err := dialInNetNS(ctx, nsPath, addr, timeout)
	if err != nil {
		return errorResult(err)
	}
	seen := p.To + ": " + got
	if detail != "" {
		seen += " (" + detail + ")"
	}
	res := Result{Seen: seen, Wanted: p.To + ": " + expect}
	if got == expect {
		res.Pass, res.Message = true, fmt.Sprintf("connection to %s is %s as expected", p.To, got)
	} else {
		res.Message = fmt.Sprintf("connection to %s from %s: %s", p.To, host, got)
	}
	return res
}

// dialInNetNS dials addr over TCP from the network namespace at nsPath and
// classifies the outcome. The socket is created on a locked thread that
// has joined the namespace; a socket keeps its namespace for life, so the
// connect may complete after the thread is back. If the thread cannot
// return to its original namespace it stays locked, and the runtime
// discards it when the goroutine ends (cilium's netns.Do pattern), so no
// other goroutine ever runs in the lab's namespace.
func dialInNetNS(ctx context.Context, nsPath, addr string, timeout time.Duration) (outcome, detail string, err error) {
	target, err := netns.GetFromPath(nsPath)
	if err != nil {
		return "", "", fmt.Errorf("open network namespace %s: %w", nsPath, err)
	}
	defer target.Close()

	type answer struct {
		outcome, detail string
		err             error
	}
	done := make(chan answer, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- answer{err: fmt.Errorf("get current network namespace: %w", err)}
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			done <- answer{err: fmt.Errorf("enter network namespace %s: %w", nsPath, err)}
			return
		}
		o, d := dialAndClassify(ctx, addr, timeout)
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: it dies with this goroutine.
			done <- answer{o, d, nil}
			return
		}
		runtime.UnlockOSThread()
		done <- answer{o, d, nil}
	}()
	a := <-done
	return a.outcome, a.detail, a.err
}

// dialAndClassify dials and names the outcome. The signatures are those
// measured on lab networks (docs PROBES.md): no route → ENETUNREACH, dead
// gateway → EHOSTUNREACH, blackhole route → EINVAL, prohibit → EACCES,
// silent drop → timeout, closed port → ECONNREFUSED.
func dialAndClassify(ctx context.Context, addr string, timeout time.Duration) (outcome, detail string) {
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err == nil {
		conn.Close()
		return connOpen, ""
	}
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return connRefused, "connection refused"
	case errors.Is(err, syscall.ENETUNREACH):
		return connUnreachable, "network is unreachable"
	case errors.Is(err, syscall.EHOSTUNREACH):
		return connUnreachable, "no route to host"
	case errors.Is(err, syscall.EINVAL):
		return connUnreachable, "invalid argument (blackhole route)"
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return connUnreachable, "prohibited"
	case errors.As(err, &ne) && ne.Timeout():
		return connTimeout, fmt.Sprintf("no answer within %s", timeout)
	}
	return "error", err.Error()
}
