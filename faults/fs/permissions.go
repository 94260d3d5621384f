package fs

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/labctl/labctl/faults"
	"github.com/labctl/labctl/labs"
)

// PermissionsParams are the `with:` of fs.permissions.
type PermissionsParams struct {
	User    string `yaml:"user" json:"user" doc:"the lab user the service runs as (declare it under the host's users)" required:"true"`
	Service string `yaml:"service,omitempty" json:"service,omitempty" doc:"the service's name as ps shows it (default worker)"`
	Config  string `yaml:"config,omitempty" json:"config,omitempty" doc:"its configuration file, in a directory of its own (default /etc/<service>/<service>.conf)"`
	Content string `yaml:"content,omitempty" json:"content,omitempty" doc:"the configuration's content" template:"true"`
	Data    string `yaml:"data,omitempty" json:"data,omitempty" doc:"its data directory (default /srv/<service>)"`
	Log     string `yaml:"log,omitempty" json:"log,omitempty" doc:"its log (default /var/log/<service>.log)"`
	// Break is what is wrong; the rest is set up right: the config
	// root:<user's group> 0640 in a root 0755 directory, the data
	// directory <user>:<group> 0750.
	Break string `yaml:"break" json:"break" doc:"what is wrong: config-mode (0600: the group may not read), config-group (owned by group root), config-dir (its directory 0700: no x for others), data-owner (data directory root's), data-mode (data directory 0550: no w)" required:"true"`
}

var breaks = map[string]bool{"config-mode": true, "config-group": true, "config-dir": true, "data-owner": true, "data-mode": true}

// Validate checks the params before anything is created.
func (p *PermissionsParams) Validate() error {
	switch {
	case !accountRe.MatchString(p.User):
		return &labs.ParamError{Field: "user", Msg: "want a lab user's name"}
	case !commRe.MatchString(p.Service):
		return &labs.ParamError{Field: "service", Msg: "want 1-15 letters, digits, '.', '_' or '-' (a process name)"}
	case p.Config != "" && (!validPath(p.Config) || filepath.Dir(p.Config) == "/" || filepath.Dir(p.Config) == "/etc"):
		return &labs.ParamError{Field: "config", Msg: "want an absolute, clean path in a directory of the service's own, e.g. /etc/worker/worker.conf"}
	case p.Data != "" && !validPath(p.Data):
		return &labs.ParamError{Field: "data", Msg: "want an absolute, clean path"}
	case p.Log != "" && !validPath(p.Log):
		return &labs.ParamError{Field: "log", Msg: "want an absolute, clean path"}
	case !breaks[p.Break]:
		return &labs.ParamError{Field: "break", Msg: fmt.Sprintf("%q is not one of config-mode, config-group, config-dir, data-owner, data-mode", p.Break)}
	}
	return nil
}

func (p *PermissionsParams) defaults() {
	if p.Config == "" {
		p.Config = "/etc/" + p.Service + "/" + p.Service + ".conf"
	}
	if p.Data == "" {
		p.Data = "/srv/" + p.Service
	}
	if p.Log == "" {
		p.Log = "/var/log/" + p.Service + ".log"
	}
}

// serviceState is what Revert needs of a started service.
type serviceState struct {
	PIDs  []int    `json:"pids"`
	Names []string `json:"names"`
}

type permissionsKind struct{}

func init() {
	faults.Register(labs.FaultKind{
		Name: "fs.permissions",
		Doc:  "a service running as a lab user cannot read its configuration or write its data directory (wrong mode, group or owner, or a directory without x) and logs permission denied",
		NewParams: func() any {
			return &PermissionsParams{Service: "worker", Content: "listen 127.0.0.1:8080\nworkers 4\n"}
		},
		Facts: []labs.FactSpec{
			{Name: "service", Doc: "the service's name"},
			{Name: "pid", Doc: "its machine-side PID"},
			{Name: "ns_pid", Doc: "its PID inside the host"},
			{Name: "user", Doc: "the user it runs as"},
			{Name: "group", Doc: "that user's primary group"},
			{Name: "config", Doc: "its configuration file"},
			{Name: "data", Doc: "its data directory"},
			{Name: "log", Doc: "its log file"},
			{Name: "heartbeat", Doc: "a file the service rewrites with the time after each successful cycle (in /tmp)"},
			{Name: "path", Doc: "the file or directory whose permissions are wrong"},
			{Name: "mode", Doc: "the mode that path should have (octal)"},
		},
	}, permissionsKind{})
}

func (permissionsKind) Apply(ctx context.Context, env faults.Env, f *labs.Fault, params any) (*faults.Applied, error) {
	p := params.(*PermissionsParams)
	p.defaults()
	h, err := env.Host(f.Host)
	if err != nil {
		return nil, err
	}
	out, err := h.Command(ctx, "id", "-gn", p.User).Output()
	if err != nil {
		return nil, fmt.Errorf("user %s is not a user of host %s (declare it under the host's users): %w", p.User, f.Host, err)
	}
	group := strings.TrimSpace(string(out))
	confDir := filepath.Dir(p.Config)
	heartbeat := "/tmp/" + p.Service + ".heartbeat"
	// The right setup first, then the one thing that is wrong.
	steps := [][]string{
		{"mkdir", "-p", confDir, p.Data, filepath.Dir(p.Log)},
		{"chown", "root:root", confDir},
		{"chmod", "0755", confDir},
		{"install", "-o", "root", "-g", group, "-m", "0640", "/dev/null", p.Config},
		{"chown", p.User + ":" + group, p.Data},
		{"chmod", "0750", p.Data},
		{"rm", "-f", heartbeat},
	}
	path, mode := p.Config, "0640"
	switch p.Break {
	case "config-mode":
		steps = append(steps, []string{"chmod", "0600", p.Config})
	case "config-group":
		steps = append(steps, []string{"chgrp", "root", p.Config})
	case "config-dir":
		steps = append(steps, []string{"chmod", "0700", confDir})
		path, mode = confDir, "0755"
	case "data-owner":
		steps = append(steps, []string{"chown", "root:root", p.Data}, []string{"chmod", "0755", p.Data})
		path, mode = p.Data, "0750"
	case "data-mode":
		steps = append(steps, []string{"chmod", "0550", p.Data})
		path, mode = p.Data, "0750"
	}
	for i, s := range steps {
		if err := run(ctx, h, s...); err != nil {
			return nil, err
		}
		if i == 3 { // the config's content, written by root before any break
			if err := os.WriteFile(h.RootPath(p.Config), []byte(p.Content), 0o640); err != nil {
				return nil, fmt.Errorf("write %s: %w", p.Config, err)
			}
		}
	}
	pid, err := startService(ctx, h, faults.ServiceSpec{
		Helper: serviceHelper, Comm: p.Service, Args: []string{"--config", p.Config},
		Params: serviceParams{Role: roleWorker, Name: p.Service, User: p.User, Log: p.Log, Heartbeat: heartbeat, Config: p.Config, Data: p.Data},
	})
	state, _ := json.Marshal(serviceState{PIDs: []int{pid}, Names: []string{p.Service}})
	applied := &faults.Applied{State: state}
	if err != nil {
		return applied, err
	}
	// Observable: the service has been refused by the kernel, and logged it.
	if err := poll(ctx, p.Service+" to log permission denied", func() (bool, error) {
		return strings.Contains(readInHost(h, p.Log), "permission denied"), nil
	}); err != nil {
		return applied, err
	}
	ns, err := nsPID(pid)
	if err != nil {
		return applied, err
	}
	applied.Facts = map[string]string{
		"service": p.Service, "pid": strconv.Itoa(pid), "ns_pid": strconv.Itoa(ns), "user": p.User, "group": group,
		"config": p.Config, "data": p.Data, "log": p.Log, "heartbeat": heartbeat, "path": path, "mode": mode,
	}
	return applied, nil
}

// Revert stops the services; the files live in the host's private view
// and go with it.
func (permissionsKind) Revert(ctx context.Context, env faults.Env, f *labs.Fault, state json.RawMessage) error {
	stopAll(state)
	return nil
}

func stopAll(state json.RawMessage) {
	var s serviceState
	if len(state) == 0 || json.Unmarshal(state, &s) != nil {
		return
	}
	for i, pid := range s.PIDs {
		if i < len(s.Names) {
			stopService(pid, s.Names[i])
		}
	}
}
