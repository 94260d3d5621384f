package netfault

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"github.com/labctl/labctl/internal/reexec"
)

// helperName is the re-exec'd helper that plays every network service.
const helperName = "netsvc"

// Service types the helper plays.
const (
	typeHTTP  = "http"
	typeEcho  = "echo"
	typeDNS   = "dns"
	typeSquat = "squat" // holds a port and answers nothing useful
)

// svcParams reach the helper out of sight (reexec.Params).
type svcParams struct {
	Type    string      `json:"type"`
	Name    string      `json:"name"`
	Listen  string      `json:"listen"`           // used when Config is empty
	Config  string      `json:"config,omitempty"` // file with a "listen ADDR:PORT" line
	Log     string      `json:"log,omitempty"`    // log file ("" = stderr)
	Body    string      `json:"body,omitempty"`
	Records []DNSRecord `json:"records,omitempty"`
}

// Log lines the faults wait for: the service says what happened to its
// bind like a real daemon would.
const (
	logListening = "listening on "
	logInUse     = "address already in use"
)

func init() { reexec.Register(helperName, serviceMain) }

// serviceMain binds the configured address, serves, and on SIGHUP
// re-reads its configuration and rebinds if the address changed, as
// nginx or sshd would. A failed bind is logged and retried every second,
// so a squatted port heals as soon as the squatter goes.
func serviceMain() int {
	var p svcParams
	if err := reexec.Params(&p); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if p.Name != "" {
		_ = reexec.SetComm(p.Name)
	}
	var logw io.Writer = os.Stderr
	if p.Log != "" {
		f, err := os.OpenFile(p.Log, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		defer f.Close()
		logw = f
	}
	logf := func(format string, args ...any) {
		fmt.Fprintf(logw, "%s %s[%d]: %s\n", time.Now().Format(time.RFC3339), p.Name, os.Getpid(), fmt.Sprintf(format, args...))
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)

	for {
		addr, err := p.listenAddr()
		var stop func()
		if err == nil {
			stop, err = p.serve(addr, logf)
		}
		if err != nil {
			logf("%v; retrying in 1s", err)
			select {
			case s := <-sigs:
				if s != syscall.SIGHUP {
					return 0
				}
				logf("reloading configuration")
			case <-time.After(time.Second):
			}
			continue
		}
		logf("%s%s", logListening, addr)
		for {
			s := <-sigs
			if s != syscall.SIGHUP {
				stop()
				return 0
			}
			logf("reloading configuration")
			next, err := p.listenAddr()
			if err != nil {
				logf("%v; keeping %s", err, addr)
				continue
			}
			if next != addr {
				stop()
				break
			}
		}
	}
}

// listenAddr reads the address to bind from the configuration file.
func (p *svcParams) listenAddr() (string, error) {
	if p.Config == "" {
		return p.Listen, nil
	}
	f, err := os.Open(p.Config)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 2 && fields[0] == "listen" {
			if _, _, err := net.SplitHostPort(fields[1]); err != nil {
				return "", fmt.Errorf("%s: listen %q: %w", p.Config, fields[1], err)
			}
			return fields[1], nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("%s: no listen line", p.Config)
}

// network picks tcp4 for an IPv4 address so ss shows 0.0.0.0:PORT, not
// a dual-stack [::] socket.
func network(proto, addr string) string {
	host, _, _ := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); ip != nil && ip.To4() != nil {
		return proto + "4"
	}
	return proto
}

// serve binds addr and serves in the background; stop closes it.
func (p *svcParams) serve(addr string, logf func(string, ...any)) (func(), error) {
	ln, err := net.Listen(network("tcp", addr), addr)
	if err != nil {
		return nil, err // "listen tcp 0.0.0.0:80: bind: address already in use"
	}
	switch p.Type {
	case typeHTTP:
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Server", p.Name)
			io.WriteString(w, p.Body+"\n")
		}), ErrorLog: nil, ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		return func() { srv.Close() }, nil
	case typeEcho, typeSquat:
		var wg sync.WaitGroup
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer c.Close()
					if p.Type == typeEcho {
						_, _ = io.Copy(c, c)
					}
				}()
			}
		}()
		return func() { ln.Close() }, nil
	case typeDNS:
		pc, err := net.ListenPacket(network("udp", addr), addr)
		if err != nil {
			ln.Close()
			return nil, err
		}
		h := dnsHandler(p.Records, logf)
		udp := &dns.Server{PacketConn: pc, Handler: h}
		tcp := &dns.Server{Listener: ln, Handler: h}
		go udp.ActivateAndServe()
		go tcp.ActivateAndServe()
		return func() { udp.Shutdown(); tcp.Shutdown() }, nil
	}
	ln.Close()
	return nil, fmt.Errorf("unknown service type %q", p.Type)
}

// dnsHandler answers from the lab's records: authoritative, NXDOMAIN for
// names it does not know, and a record's rcode (servfail, nxdomain,
// refused) or delay where the lab breaks one name.
func dnsHandler(records []DNSRecord, logf func(string, ...any)) dns.Handler {
	byName := map[string][]DNSRecord{}
	for _, r := range records {
		n := dns.Fqdn(strings.ToLower(r.Name))
		byName[n] = append(byName[n], r)
	}
	return dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		m.Authoritative = true
		if len(req.Question) != 1 {
			m.SetRcode(req, dns.RcodeFormatError)
			_ = w.WriteMsg(m)
			return
		}
		q := req.Question[0]
		name := strings.ToLower(q.Name)
		recs, known := byName[name]
		var delay time.Duration
		for _, r := range recs {
			if d := r.Delay.D(); d > delay {
				delay = d
			}
			if r.Rcode != "" {
				m.SetRcode(req, rcodes[r.Rcode])
			}
		}
		if !known {
			m.SetRcode(req, dns.RcodeNameError)
		}
		if m.Rcode == dns.RcodeSuccess {
			m.Answer = answers(byName, name, q.Qtype, 0)
		}
		if delay > 0 {
			time.Sleep(delay) // the lab's slow server: the delay is the fault
		}
		_ = w.WriteMsg(m)
	})
}

var rcodes = map[string]int{
	"nxdomain": dns.RcodeNameError,
	"servfail": dns.RcodeServerFailure,
	"refused":  dns.RcodeRefused,
}

// answers collects the records of name for qtype, following CNAMEs
// within the lab's zone (a few levels, so a loop cannot hang the server).
func answers(byName map[string][]DNSRecord, name string, qtype uint16, depth int) []dns.RR {
	if depth > 8 {
		return nil
	}
	var out []dns.RR
	for _, r := range byName[name] {
		hdr := dns.RR_Header{Name: name, Class: dns.ClassINET, Ttl: 60}
		switch {
		case r.Type == "CNAME" && qtype != dns.TypeCNAME:
			hdr.Rrtype = dns.TypeCNAME
			target := dns.Fqdn(strings.ToLower(r.Value))
			out = append(out, &dns.CNAME{Hdr: hdr, Target: target})
			out = append(out, answers(byName, target, qtype, depth+1)...)
		case r.Type == "CNAME" && qtype == dns.TypeCNAME:
			hdr.Rrtype = dns.TypeCNAME
			out = append(out, &dns.CNAME{Hdr: hdr, Target: dns.Fqdn(r.Value)})
		case r.Type == "A" && qtype == dns.TypeA:
			hdr.Rrtype = dns.TypeA
			out = append(out, &dns.A{Hdr: hdr, A: net.ParseIP(r.Value).To4()})
		case r.Type == "AAAA" && qtype == dns.TypeAAAA:
			hdr.Rrtype = dns.TypeAAAA
			out = append(out, &dns.AAAA{Hdr: hdr, AAAA: net.ParseIP(r.Value)})
		}
	}
	return out
}
