package checks

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/labctl/labctl/labs"
)

// PortParams checks whether something listens on a port inside a host.
type PortParams struct {
	Port      int    `yaml:"port" json:"port" doc:"port number" required:"true"`
	Proto     string `yaml:"proto,omitempty" json:"proto,omitempty" doc:"tcp (default) or udp"`
	Addr      string `yaml:"addr,omitempty" json:"addr,omitempty" doc:"the local address bound, e.g. 0.0.0.0, :: or an IP (default: any)" template:"true"`
	Process   string `yaml:"process,omitempty" json:"process,omitempty" doc:"RE2 expression the listening process's command name must match" template:"true"`
	Listening *bool  `yaml:"listening,omitempty" json:"listening,omitempty" doc:"something listens (default true); false: nothing does"`
}

// Validate checks what can be checked before facts are known.
func (p *PortParams) Validate() error {
	if p.Port < 1 || p.Port > 65535 {
		return &labs.ParamError{Field: "port", Msg: "must be between 1 and 65535"}
	}
	if p.Proto != "tcp" && p.Proto != "udp" {
		return &labs.ParamError{Field: "proto", Msg: fmt.Sprintf("%q is not tcp or udp", p.Proto)}
	}
	if p.Addr != "" && !strings.Contains(p.Addr, "{{") {
		if _, err := netip.ParseAddr(p.Addr); err != nil {
			return &labs.ParamError{Field: "addr", Msg: fmt.Sprintf("%q is not an IP address", p.Addr)}
		}
	}
	if p.Process != "" && !strings.Contains(p.Process, "{{") {
		if _, err := regexp.Compile(p.Process); err != nil {
			return &labs.ParamError{Field: "process", Msg: "invalid regular expression: " + err.Error()}
		}
	}
	return nil
}

type portProber struct{}

func init() {
	Register(labs.ProbeKind{
		Name: "port",
		Doc:  "checks for a listening TCP socket (or bound UDP socket) in the host, optionally its address and process",
		NewParams: func() any {
			listening := true
			return &PortParams{Proto: "tcp", Listening: &listening}
		},
	}, portProber{})
}

// socket is one entry of /proc/net/{tcp,udp}{,6}.
type socket struct {
	addr  netip.Addr
	port  int
	state string // hex state: 0A is TCP LISTEN, 07 is UDP unconnected
	inode string
}

func (portProber) Probe(ctx context.Context, t Target, host string, params any) Result {
	p := params.(*PortParams)
	proto := p.Proto
	if proto == "" {
		proto = "tcp"
	}
	wantListening := p.Listening == nil || *p.Listening
	var wantAddr netip.Addr
	if p.Addr != "" {
		var err error
		if wantAddr, err = netip.ParseAddr(strings.TrimSpace(p.Addr)); err != nil {
			return errorResult(fmt.Errorf("addr: %q is not an IP address", p.Addr))
		}
	}
	var procRE *regexp.Regexp
	if p.Process != "" {
		var err error
		if procRE, err = regexp.Compile(p.Process); err != nil {
			return errorResult(fmt.Errorf("process: invalid regular expression: %w", err))
		}
	}
	initPID, err := t.InitPID(host)
	if err != nil {
		return errorResult(fmt.Errorf("host %s: %w", host, err))
	}
	// /proc/<init>/net is the socket table of init's network namespace:
	// the host's, not the machine's.
	wantState := "0A"
	if proto == "udp" {
		wantState = "07"
	}
	var found []socket
	for _, file := range []string{proto, proto + "6"} {
		socks, err := readSockets(filepath.Join(procRoot, strconv.Itoa(initPID), "net", file))
		if err != nil {
			return errorResult(err)
		}
		for _, s := range socks {
			if s.port == p.Port && s.state == wantState && (!wantAddr.IsValid() || addrMatches(s.addr, wantAddr)) {
				found = append(found, s)
			}
		}
	}
	what := fmt.Sprintf("%s port %d", proto, p.Port)
	if wantAddr.IsValid() {
		what = fmt.Sprintf("%s %s", proto, netip.AddrPortFrom(wantAddr, uint16(p.Port)))
	}
	res := Result{Wanted: what + " listening"}
	if !wantListening {
		res.Wanted = "nothing on " + what
	}
	if p.Process != "" {
		res.Wanted += " by a process matching " + p.Process
	}
	var owners []proc
	if len(found) > 0 {
		owners, err = socketOwners(initPID, found)
		if err != nil {
			return errorResult(err)
		}
	}
	listening := len(found) > 0
	if procRE != nil {
		listening = false
		for _, o := range owners {
			if procRE.MatchString(o.Comm) {
				listening = true
			}
		}
	}
	res.Seen = describeSockets(found, owners)
	switch {
	case listening == wantListening:
		res.Pass = true
		res.Message = what + " is as expected"
	case wantListening && len(found) > 0:
		res.Message = what + " is held by another process"
	case wantListening:
		res.Message = "nothing listens on " + what
	default:
		res.Message = "something still listens on " + what
	}
	return res
}

// addrMatches compares a socket's local address with the wanted one. A
// socket bound to [::] usually accepts IPv4 too (ss shows it as *:port;
// Go and many daemons listen that way for 0.0.0.0), and /proc does not
// say whether IPV6_V6ONLY is set, so addr 0.0.0.0 accepts it as well.
func addrMatches(got, want netip.Addr) bool {
	if got.Unmap() == want.Unmap() {
		return true
	}
	return want == netip.IPv4Unspecified() && got == netip.IPv6Unspecified()
}

// readSockets parses one /proc/net socket table.
func readSockets(file string) ([]socket, error) {
	f, err := os.Open(file)
	if os.IsNotExist(err) {
		// No IPv6 in that namespace's kernel: nothing listens there.
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read socket table: %w", err)
	}
	defer f.Close()
	var out []socket
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 {
			continue
		}
		addr, port, err := parseProcAddr(fields[1])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		out = append(out, socket{addr: addr, port: port, state: fields[3], inode: fields[9]})
	}
	return out, sc.Err()
}

// parseProcAddr decodes "0100007F:1F90" (IPv4, host byte order per 32-bit
// word) and the 32-hex-digit IPv6 form.
func parseProcAddr(s string) (netip.Addr, int, error) {
	hexAddr, hexPort, ok := strings.Cut(s, ":")
	if !ok {
		return netip.Addr{}, 0, fmt.Errorf("bad socket address %q", s)
	}
	port, err := strconv.ParseUint(hexPort, 16, 16)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("bad port in %q", s)
	}
	raw, err := hex.DecodeString(hexAddr)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.Addr{}, 0, fmt.Errorf("bad address in %q", s)
	}
	// Each 32-bit word is in the kernel's (little-endian here) byte order.
	for i := 0; i < len(raw); i += 4 {
		binary.BigEndian.PutUint32(raw[i:], binary.LittleEndian.Uint32(raw[i:]))
	}
	addr, _ := netip.AddrFromSlice(raw)
	return addr, int(port), nil
}

// socketOwners finds the host's processes holding any of the sockets, by
// matching socket:[inode] links under /proc/PID/fd.
func socketOwners(initPID int, socks []socket) ([]proc, error) {
	want := map[string]bool{}
	for _, s := range socks {
		want["socket:["+s.inode+"]"] = true
	}
	procs, err := hostProcs(initPID)
	if err != nil {
		return nil, err
	}
	var out []proc
	for _, pr := range procs {
		dir := filepath.Join(procRoot, strconv.Itoa(pr.PID), "fd")
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue // exited meanwhile
		}
		for _, e := range entries {
			if link, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && want[link] {
				out = append(out, pr)
				break
			}
		}
	}
	return out, nil
}

func describeSockets(found []socket, owners []proc) string {
	if len(found) == 0 {
		return "no listening socket"
	}
	var addrs []string
	for _, s := range found {
		addrs = append(addrs, netip.AddrPortFrom(s.addr, uint16(s.port)).String())
	}
	seen := "listening on " + strings.Join(addrs, ", ")
	if len(owners) > 0 {
		var names []string
		for _, o := range owners {
			names = append(names, fmt.Sprintf("%s (%d)", o.Comm, o.PID))
		}
		seen += " by " + strings.Join(names, ", ")
	}
	return seen
}
