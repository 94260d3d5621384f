package netfault

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path"
	"regexp"
	"strconv"
	"strings"
	"syscall"

	"github.com/labctl/labctl/faults"
	"github.com/labctl/labctl/labs"
)

// ServiceParams place a service on a host: `net.service` is not a fault
// by itself but the thing other faults break (and what a learner fixes).
type ServiceParams struct {
	Type    string      `yaml:"type" json:"type" doc:"http, echo or dns" required:"true"`
	Name    string      `yaml:"name,omitempty" json:"name,omitempty" doc:"process name as ps and ss show it (default httpd, echo or named)"`
	Port    int         `yaml:"port,omitempty" json:"port,omitempty" doc:"port (default 80, 7 or 53)"`
	Bind    string      `yaml:"bind,omitempty" json:"bind,omitempty" doc:"address bound (default 0.0.0.0)" template:"true"`
	Log     string      `yaml:"log,omitempty" json:"log,omitempty" doc:"log file inside the host, in /tmp or /etc (default /tmp/<name>.log)"`
	Body    string      `yaml:"body,omitempty" json:"body,omitempty" doc:"http: the response body" template:"true"`
	Records []DNSRecord `yaml:"records,omitempty" json:"records,omitempty" doc:"dns: the records served; other names get NXDOMAIN"`
}

// DNSRecord is one record of the lab's DNS server, or a broken name.
type DNSRecord struct {
	Name  string        `yaml:"name" json:"name" doc:"fully qualified name, e.g. www.corp.lab" required:"true" template:"true"`
	Type  string        `yaml:"type,omitempty" json:"type,omitempty" doc:"A (default), AAAA or CNAME"`
	Value string        `yaml:"value,omitempty" json:"value,omitempty" doc:"address or CNAME target" template:"true"`
	Rcode string        `yaml:"rcode,omitempty" json:"rcode,omitempty" doc:"answer this name with nxdomain, servfail or refused instead"`
	Delay labs.Duration `yaml:"delay,omitempty" json:"delay,omitempty" doc:"answer this name only after this long"`
}

var procName = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,15}$`)

// Validate checks what can be checked before facts are known.
func (p *ServiceParams) Validate() error {
	switch p.Type {
	case typeHTTP, typeEcho, typeDNS:
	default:
		return &labs.ParamError{Field: "type", Msg: fmt.Sprintf("%q is not http, echo or dns", p.Type)}
	}
	if p.Name != "" && !procName.MatchString(p.Name) {
		return &labs.ParamError{Field: "name", Msg: "want 1-15 letters, digits, '.', '_' or '-' (a process name)"}
	}
	if p.Port < 0 || p.Port > 65535 {
		return &labs.ParamError{Field: "port", Msg: "must be between 1 and 65535"}
	}
	if p.Bind != "" && !strings.Contains(p.Bind, "{{") && net.ParseIP(p.Bind) == nil {
		return &labs.ParamError{Field: "bind", Msg: fmt.Sprintf("%q is not an IP address", p.Bind)}
	}
	if p.Log != "" {
		if err := privatePath(p.Log); err != nil {
			return &labs.ParamError{Field: "log", Msg: err.Error()}
		}
	}
	if len(p.Records) > 0 && p.Type != typeDNS {
		return &labs.ParamError{Field: "records", Msg: "only a dns service serves records"}
	}
	for i, r := range p.Records {
		if err := r.validate(); err != nil {
			return &labs.ParamError{Field: fmt.Sprintf("records[%d]", i), Msg: err.Error()}
		}
	}
	return nil
}

func (r *DNSRecord) validate() error {
	switch r.Type {
	case "", "A", "AAAA", "CNAME":
	default:
		return fmt.Errorf("type %q is not A, AAAA or CNAME", r.Type)
	}
	if _, ok := rcodes[r.Rcode]; r.Rcode != "" && !ok {
		return fmt.Errorf("rcode %q is not nxdomain, servfail or refused", r.Rcode)
	}
	if r.Rcode == "" && r.Value == "" {
		return fmt.Errorf("%s: needs a value (or an rcode)", r.Name)
	}
	if r.Value != "" && !strings.Contains(r.Value, "{{") && r.Type != "CNAME" {
		ip := net.ParseIP(r.Value)
		if ip == nil || (r.Type == "AAAA") == (ip.To4() != nil) {
			return fmt.Errorf("value %q is not an IPv%s address", r.Value, map[bool]string{true: "6", false: "4"}[r.Type == "AAAA"])
		}
	}
	return nil
}

// privatePath accepts only paths in the host's private directories: its
// own tmpfs /tmp and its overlay /etc. Anything else would be written
// through to the machine's file system.
func privatePath(p string) error {
	clean := path.Clean(p)
	if clean != p || !path.IsAbs(p) {
		return fmt.Errorf("%q: want a clean absolute path", p)
	}
	if !strings.HasPrefix(p, "/tmp/") && !strings.HasPrefix(p, "/etc/") {
		return fmt.Errorf("%q: must be under /tmp or /etc, the host's private directories", p)
	}
	return nil
}

var defaultNames = map[string]string{typeHTTP: "httpd", typeEcho: "echo", typeDNS: "named"}
var defaultPorts = map[string]int{typeHTTP: 80, typeEcho: 7, typeDNS: 53}

// serviceState is what Revert needs: the name to find the process by.
type serviceState struct {
	Name string `json:"name"`
}

type serviceKind struct{}

func init() {
	faults.Register(labs.FaultKind{
		Name:      "net.service",
		Doc:       "runs an HTTP, TCP echo or DNS server on a host (labctl re-exec'd under the service's name), configured by /etc/<name>.conf; it reloads on SIGHUP",
		NewParams: func() any { return &ServiceParams{} },
		Facts: []labs.FactSpec{
			{Name: "pid", Doc: "the service's PID inside its host"},
			{Name: "name", Doc: "the service's process name"},
			{Name: "port", Doc: "the port it is configured for"},
			{Name: "listen", Doc: "address:port of its configuration's listen line"},
			{Name: "config", Doc: "its configuration file inside the host"},
			{Name: "log", Doc: "its log file inside the host"},
		},
		Inits: []labs.InitKind{labs.InitMini},
	}, serviceKind{})
}

func (serviceKind) Apply(ctx context.Context, env faults.Env, f *labs.Fault, params any) (*faults.Applied, error) {
	p := params.(*ServiceParams)
	h, err := env.Host(f.Host)
	if err != nil {
		return nil, err
	}
	name := p.Name
	if name == "" {
		name = defaultNames[p.Type]
	}
	port := p.Port
	if port == 0 {
		port = defaultPorts[p.Type]
	}
	bind := p.Bind
	if bind == "" {
		bind = "0.0.0.0"
	}
	if net.ParseIP(bind) == nil {
		return nil, fmt.Errorf("bind: %q is not an IP address", bind)
	}
	for i, r := range p.Records {
		if err := r.validate(); err != nil {
			return nil, fmt.Errorf("records[%d]: %w", i, err)
		}
		if r.Type == "" {
			p.Records[i].Type = "A"
		}
	}
	logPath := p.Log
	if logPath == "" {
		logPath = "/tmp/" + name + ".log"
	}
	listen := net.JoinHostPort(bind, strconv.Itoa(port))
	sp := svcParams{Type: p.Type, Name: name, Config: "/etc/" + name + ".conf", Log: logPath, Body: p.Body, Records: p.Records}
	applied := &faults.Applied{
		State: mustJSON(serviceState{Name: name}),
		Facts: map[string]string{"name": name, "port": strconv.Itoa(port), "listen": listen, "config": sp.Config, "log": logPath},
	}
	pid, err := startService(ctx, h, sp, listen)
	if err != nil {
		return applied, err
	}
	applied.Facts["pid"] = strconv.Itoa(pid)
	return applied, nil
}

// startService writes the service's configuration, starts it inside the
// host and waits until it has either bound its address or logged why it
// cannot. It returns the service's PID inside the host.
func startService(ctx context.Context, h faults.Host, sp svcParams, listen string) (int, error) {
	conf := fmt.Sprintf("# %s configuration (reload with SIGHUP)\nlisten %s\nlog %s\n", sp.Name, listen, sp.Log)
	if err := writeHostFile(ctx, h, sp.Config, []byte(conf)); err != nil {
		return 0, err
	}
	// A fresh log, so readiness below reads only this start's lines.
	if err := writeHostFile(ctx, h, sp.Log, nil); err != nil {
		return 0, err
	}
	cmd, err := h.Service(ctx, faults.ServiceSpec{Helper: helperName, Comm: sp.Name, Args: []string{"--config", sp.Config}, Params: sp})
	if err != nil {
		return 0, err
	}
	// The launcher's stdio becomes the service's. Early errors (before the
	// service opens its log) land in an unlinked machine-side file: a pipe
	// would break once labctl exits.
	errFile, err := os.CreateTemp("", "labctl-netsvc-*")
	if err != nil {
		return 0, err
	}
	os.Remove(errFile.Name())
	defer errFile.Close()
	early := func() string {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/self/fd/%d", errFile.Fd()))
		return strings.TrimSpace(string(b))
	}
	cmd.Stdout, cmd.Stderr = errFile, errFile
	// The launcher exits once the service runs inside the host as a child
	// of the host's init; the service dies with its host.
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("start %s: %w: %s", sp.Name, err, early())
	}
	var pid int
	err = poll(ctx, fmt.Sprintf("%s on %s", sp.Name, h.Name()), func() (bool, error) {
		pids, err := hostProcs(h, sp.Name)
		if err != nil {
			return false, err
		}
		if len(pids) == 0 {
			return false, fmt.Errorf("%s is not running: %s", sp.Name, early())
		}
		log, err := readHostFile(ctx, h, sp.Log)
		if err != nil {
			return false, err
		}
		s := string(log)
		if !strings.Contains(s, logListening+listen) && !strings.Contains(s, logInUse) {
			return false, nil
		}
		pid = pids[0]
		return true, nil
	})
	if err != nil {
		return 0, err
	}
	return innerPID(pid)
}

// Revert stops the service. Its host's teardown would kill it anyway;
// stopping it here keeps Revert meaningful on a live host.
func (serviceKind) Revert(ctx context.Context, env faults.Env, f *labs.Fault, state json.RawMessage) error {
	var st serviceState
	if len(state) == 0 {
		return nil
	}
	if err := json.Unmarshal(state, &st); err != nil {
		return fmt.Errorf("service state: %w", err)
	}
	h, err := env.Host(f.Host)
	if err != nil || hostGone(h) {
		return nil
	}
	return stopProcs(ctx, h, st.Name)
}

// stopProcs sends SIGTERM to the host's processes named comm and waits
// until they are gone.
func stopProcs(ctx context.Context, h faults.Host, comm string) error {
	pids, err := hostProcs(h, comm)
	if err != nil {
		return nil // the host is gone: so are its processes
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	return poll(ctx, "stop "+comm, func() (bool, error) {
		pids, err := hostProcs(h, comm)
		return err != nil || len(pids) == 0, nil
	})
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
