package netfault

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"

	"github.com/labctl/labctl/faults"
	"github.com/labctl/labctl/labs"
)

// Modes of net.listener.
const (
	listenSquatter  = "squatter"   // another process holds the service's port
	listenLocalhost = "localhost"  // the service listens on 127.0.0.1 only
	listenWrongPort = "wrong-port" // the service listens on another port
)

// ListenerParams break a service's listening socket.
type ListenerParams struct {
	Mode string `yaml:"mode" json:"mode" doc:"squatter (list it before the service), localhost or wrong-port (list it after the service)" required:"true"`
	// Service is the net.service's process name (localhost, wrong-port).
	Service string `yaml:"service,omitempty" json:"service,omitempty" doc:"localhost, wrong-port: the service's process name (its config is /etc/<name>.conf)"`
	Port    int    `yaml:"port,omitempty" json:"port,omitempty" doc:"squatter: the port taken; wrong-port: the port the service moves to"`
	Name    string `yaml:"name,omitempty" json:"name,omitempty" doc:"squatter: its process name (default backup-agent)"`
}

// Validate checks what can be checked before facts are known.
func (p *ListenerParams) Validate() error {
	switch p.Mode {
	case listenSquatter:
		if p.Port < 1 || p.Port > 65535 {
			return &labs.ParamError{Field: "port", Msg: "squatter needs the port it takes (1-65535)"}
		}
		if p.Name != "" && !procName.MatchString(p.Name) {
			return &labs.ParamError{Field: "name", Msg: "want 1-15 letters, digits, '.', '_' or '-' (a process name)"}
		}
	case listenLocalhost, listenWrongPort:
		if !procName.MatchString(p.Service) {
			return &labs.ParamError{Field: "service", Msg: "needs the service's process name"}
		}
		if p.Mode == listenWrongPort && (p.Port < 1 || p.Port > 65535) {
			return &labs.ParamError{Field: "port", Msg: "wrong-port needs the port the service moves to (1-65535)"}
		}
	default:
		return &labs.ParamError{Field: "mode", Msg: fmt.Sprintf("%q is not squatter, localhost or wrong-port", p.Mode)}
	}
	return nil
}

// listenerState is what Revert needs.
type listenerState struct {
	Mode    string `json:"mode"`
	Name    string `json:"name,omitempty"`   // the squatter
	Config  string `json:"config,omitempty"` // the service's config before
	Service string `json:"service,omitempty"`
}

type listenerKind struct{}

func init() {
	faults.Register(labs.FaultKind{
		Name:      "net.listener",
		Doc:       "breaks a service's listener: a squatter holding its port, or its config moved to 127.0.0.1 or another port (applied with a SIGHUP reload)",
		NewParams: func() any { return &ListenerParams{Name: "backup-agent"} },
		Facts: []labs.FactSpec{
			{Name: "pid", Doc: "squatter: the squatter's PID inside the host; otherwise the service's"},
			{Name: "name", Doc: "squatter: the squatter's process name; otherwise the service's"},
			{Name: "port", Doc: "the port taken (squatter) or listened on (wrong-port, localhost)"},
			{Name: "listen", Doc: "address:port the process listens on"},
		},
		Inits: []labs.InitKind{labs.InitMini},
	}, listenerKind{})
}

func (listenerKind) Apply(ctx context.Context, env faults.Env, f *labs.Fault, params any) (*faults.Applied, error) {
	p := params.(*ListenerParams)
	h, err := env.Host(f.Host)
	if err != nil {
		return nil, err
	}
	if p.Mode == listenSquatter {
		listen := net.JoinHostPort("0.0.0.0", strconv.Itoa(p.Port))
		applied := &faults.Applied{
			State: mustJSON(listenerState{Mode: p.Mode, Name: p.Name}),
			Facts: map[string]string{"name": p.Name, "port": strconv.Itoa(p.Port), "listen": listen},
		}
		sp := svcParams{Type: typeSquat, Name: p.Name, Config: "/etc/" + p.Name + ".conf", Log: "/tmp/" + p.Name + ".log"}
		pid, err := startService(ctx, h, sp, listen)
		if err != nil {
			return applied, err
		}
		applied.Facts["pid"] = strconv.Itoa(pid)
		return applied, nil
	}

	config := "/etc/" + p.Service + ".conf"
	old, err := readHostFile(ctx, h, config)
	if err != nil {
		return nil, fmt.Errorf("service %s (declare its net.service before this fault): %w", p.Service, err)
	}
	cur, err := (&svcParams{Config: config}).listenFrom(string(old))
	if err != nil {
		return nil, err
	}
	host, port, _ := net.SplitHostPort(cur)
	switch p.Mode {
	case listenLocalhost:
		host = "127.0.0.1"
	case listenWrongPort:
		port = strconv.Itoa(p.Port)
	}
	listen := net.JoinHostPort(host, port)
	applied := &faults.Applied{
		State: mustJSON(listenerState{Mode: p.Mode, Config: string(old), Service: p.Service}),
		Facts: map[string]string{"name": p.Service, "port": port, "listen": listen},
	}
	next := strings.Replace(string(old), "listen "+cur, "listen "+listen, 1)
	pid, err := reload(ctx, h, p.Service, config, []byte(next), listen)
	if err != nil {
		return applied, err
	}
	applied.Facts["pid"] = strconv.Itoa(pid)
	return applied, nil
}

// listenFrom finds the listen address in a config file's content.
func (p *svcParams) listenFrom(content string) (string, error) {
	for _, line := range strings.Split(content, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == "listen" {
			return f[1], nil
		}
	}
	return "", fmt.Errorf("%s: no listen line", p.Config)
}

// reload writes a service's config, sends it SIGHUP as an operator would
// and waits until its log says it listens on the new address.
func reload(ctx context.Context, h faults.Host, service, config string, content []byte, listen string) (int, error) {
	pids, err := hostProcs(h, service)
	if err != nil {
		return 0, err
	}
	if len(pids) == 0 {
		return 0, fmt.Errorf("host %s: no process named %s (declare its net.service before this fault)", h.Name(), service)
	}
	logPath := "/tmp/" + service + ".log"
	for _, line := range strings.Split(string(content), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "log" {
			logPath = f[1]
		}
	}
	if err := writeHostFile(ctx, h, config, content); err != nil {
		return 0, err
	}
	before, err := readHostFile(ctx, h, logPath)
	if err != nil {
		return 0, err
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
			return 0, fmt.Errorf("reload %s: %w", service, err)
		}
	}
	err = poll(ctx, service+" listening on "+listen, func() (bool, error) {
		log, err := readHostFile(ctx, h, logPath)
		if err != nil || len(log) < len(before) {
			return false, err
		}
		return strings.Contains(string(log[len(before):]), logListening+listen), nil
	})
	if err != nil {
		return 0, err
	}
	return innerPID(pids[0])
}

func (listenerKind) Revert(ctx context.Context, env faults.Env, f *labs.Fault, state json.RawMessage) error {
	if len(state) == 0 {
		return nil
	}
	var st listenerState
	if err := json.Unmarshal(state, &st); err != nil {
		return fmt.Errorf("listener state: %w", err)
	}
	h, err := env.Host(f.Host)
	if err != nil || hostGone(h) {
		return nil
	}
	if st.Mode == listenSquatter {
		return stopProcs(ctx, h, st.Name)
	}
	// Put the config back; the service rereads it on SIGHUP.
	if err := writeHostFile(ctx, h, "/etc/"+st.Service+".conf", []byte(st.Config)); err != nil {
		return err
	}
	pids, _ := hostProcs(h, st.Service)
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGHUP)
	}
	return nil
}
