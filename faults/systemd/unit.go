// Package systemd holds the fault kinds of systemd hosts (hosts.<h>.init:
// systemd): unit files broken the ways operators meet them, so that the
// real systemd inside the host fails them and `systemctl status` and
// `journalctl -u` show why.
package systemd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/labctl/labctl/faults"
	"github.com/labctl/labctl/labs"
)

// UnitParams configure systemd.unit.
type UnitParams struct {
	Unit    string        `yaml:"unit" json:"unit" doc:"the unit's name, e.g. worker.service" required:"true"`
	Content string        `yaml:"content" json:"content" doc:"the unit file as installed in /etc/systemd/system, with its misconfiguration" required:"true" template:"true"`
	Problem string        `yaml:"problem" json:"problem" doc:"the misconfiguration, which says when it is observable: exec-not-found, start-limit, missing-user, too-few-files, missing-envfile, start-timeout, hardening, missing-dependency, dependency-order, reload-noop" required:"true"`
	Enable  *bool         `yaml:"enable,omitempty" json:"enable,omitempty" doc:"enable the unit (default true)"`
	Then    []string      `yaml:"then,omitempty" json:"then,omitempty" doc:"a command (argv) run inside the host once the fault shows, e.g. the operator's change that exposes it (edit a config, systemctl reload)" template:"true"`
	Timeout labs.Duration `yaml:"timeout,omitempty" json:"timeout,omitempty" doc:"how long the symptom may take to show (default 60s)"`
}

// problem says how systemd shows one misconfiguration in `systemctl show`:
// Apply returns once every property has its value.
type problem struct {
	doc   string
	props map[string]string
	// journal, when set, must match a line of the unit's journal too:
	// some failures are only named there.
	journal *regexp.Regexp
	// holds, when set, must hold on the unit's properties too: for a
	// failure whose cause is a relation between properties, not a value.
	holds func(props map[string]string) bool
	// startRefused: systemd refuses the start job itself (the error is
	// the symptom, printed by systemctl start), so Apply must not fail on it.
	startRefused bool
}

var problems = map[string]problem{
	"exec-not-found": {doc: "ExecStart names a program that does not exist (status=203/EXEC)",
		props: map[string]string{"ExecMainStatus": "203"}},
	"start-limit": {doc: "a crashing service with Restart=always hits the start limit",
		props: map[string]string{"ActiveState": "failed"}, journal: regexp.MustCompile(`Start request repeated too quickly`)},
	"missing-user": {doc: "User= names a user that does not exist (status=217/USER)",
		props: map[string]string{"ExecMainStatus": "217"}},
	"too-few-files": {doc: "LimitNOFILE= is too low: the service fails with Too many open files",
		props: map[string]string{"Result": "exit-code", "ActiveState": "failed"}},
	"missing-envfile": {doc: "EnvironmentFile= names a file that does not exist",
		props: map[string]string{"Result": "resources", "ActiveState": "failed"}},
	"start-timeout": {doc: "Type=forking for a service that does not fork: the start times out",
		props: map[string]string{"Result": "timeout", "ActiveState": "failed"}},
	"hardening": {doc: "hardening (ProtectSystem=strict without ReadWritePaths=) blocks the service's writes",
		props: map[string]string{"Result": "exit-code", "ActiveState": "failed"}},
	"missing-dependency": {doc: "Requires= names a unit that does not exist: systemd refuses to start it",
		props: map[string]string{"LoadState": "loaded", "ActiveState": "inactive"}, startRefused: true},
	"dependency-order": {doc: "Requires= without After=: the service starts alongside the unit it needs, before that unit is ready, and exits",
		props: map[string]string{"Result": "exit-code", "ActiveState": "failed"}, holds: requiresUnordered},
	"reload-noop": {doc: "ExecReload= does not make the service reload its configuration",
		props: map[string]string{"ActiveState": "active", "SubState": "running"}},
}

// requiresUnordered reports whether the unit requires a unit it is not
// ordered after (Requires= without After=): systemd then starts both at
// once instead of waiting for the required one.
func requiresUnordered(props map[string]string) bool {
	after := map[string]bool{}
	for _, u := range strings.Fields(props["After"]) {
		after[u] = true
	}
	for _, u := range strings.Fields(props["Requires"]) {
		if !after[u] {
			return true
		}
	}
	return false
}

// unitNameRE: a service unit name (no paths, no template instances).
var unitNameRE = regexp.MustCompile(`^[A-Za-z0-9:_.\\-]+\.service$`)

// Validate checks the params before anything runs.
func (p *UnitParams) Validate() error {
	if !unitNameRE.MatchString(p.Unit) {
		return &labs.ParamError{Field: "unit", Msg: fmt.Sprintf("%q is not a service unit name such as worker.service", p.Unit)}
	}
	if _, ok := problems[p.Problem]; !ok {
		return &labs.ParamError{Field: "problem", Msg: fmt.Sprintf("%q is not one of %s", p.Problem, strings.Join(problemNames(), ", "))}
	}
	if !strings.Contains(p.Content, "{{") && !strings.Contains(p.Content, "[Service]") {
		return &labs.ParamError{Field: "content", Msg: "a service unit needs a [Service] section"}
	}
	if p.Timeout.D() <= 0 {
		return &labs.ParamError{Field: "timeout", Msg: "must be positive"}
	}
	return nil
}

func problemNames() []string {
	out := make([]string, 0, len(problems))
	for n := range problems {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

type unitKind struct{}

// unitState is what Revert needs.
type unitState struct {
	Unit string `json:"unit"`
}

func init() {
	faults.Register(labs.FaultKind{
		Name: "systemd.unit",
		Doc:  "installs a service unit with a named misconfiguration in a systemd host, starts it and returns once systemd shows the failure",
		NewParams: func() any {
			enable := true
			return &UnitParams{Enable: &enable, Timeout: labs.Duration(60 * time.Second)}
		},
		Facts: []labs.FactSpec{
			{Name: "unit", Doc: "the unit's name"},
			{Name: "result", Doc: "the unit's Result once the fault is observable (exit-code, start-limit-hit, ...)"},
			{Name: "exec_status", Doc: "ExecMainStatus: the main process's exit status (203, 217, 1, ...)"},
			{Name: "unit_path", Doc: "where the unit file is inside the host"},
			{Name: "n_restarts", Doc: "NRestarts: how often systemd restarted the service automatically"},
		},
		Inits: []labs.InitKind{labs.InitSystemd},
	}, unitKind{})
}

// unitDir is where admins (and this fault) put unit files.
const unitDir = "/etc/systemd/system"

func (unitKind) Apply(ctx context.Context, env faults.Env, f *labs.Fault, params any) (*faults.Applied, error) {
	p := params.(*UnitParams)
	h, err := env.Host(f.Host)
	if err != nil {
		return nil, err
	}
	state, err := json.Marshal(unitState{Unit: p.Unit})
	if err != nil {
		return nil, err
	}
	// Nothing outlives the host (the unit file is in its volatile
	// overlay); Revert removes the unit while the host lives.
	unitPath := filepath.Join(unitDir, p.Unit)
	if err := os.WriteFile(h.RootPath(unitPath), []byte(p.Content), 0o644); err != nil {
		return nil, fmt.Errorf("install %s: %w", unitPath, err)
	}
	if _, err := systemctl(ctx, h, "daemon-reload"); err != nil {
		return nil, err
	}
	if p.Enable == nil || *p.Enable {
		if _, err := systemctl(ctx, h, "enable", "--quiet", p.Unit); err != nil {
			return nil, err
		}
	}
	// --no-block: a start that times out or waits must not hold labctl;
	// the failure is observed below.
	if _, err := systemctl(ctx, h, "start", "--no-block", p.Unit); err != nil && !problems[p.Problem].startRefused {
		return nil, err
	}
	env.Logf("waiting for %s to show: %s", p.Unit, problems[p.Problem].doc)
	props, err := waitProps(ctx, h, p.Unit, problems[p.Problem], p.Timeout.D())
	if err != nil {
		return nil, err
	}
	if len(p.Then) > 0 {
		cmd := h.Command(ctx, p.Then...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("then %q in host %s: %w: %s", p.Then, h.Name(), err, strings.TrimSpace(string(out)))
		}
	}
	return &faults.Applied{
		Facts: map[string]string{
			"unit":        p.Unit,
			"result":      props["Result"],
			"exec_status": props["ExecMainStatus"],
			"unit_path":   unitPath,
			"n_restarts":  props["NRestarts"],
		},
		State: state,
	}, nil
}

// ContainedInHost: the unit file lives in the host's volatile overlay and
// its processes in the host's cgroup, so teardown need not revert it.
func (unitKind) ContainedInHost() bool { return true }

// Revert stops and removes the unit while the host runs; a host that is
// gone took the unit (in its volatile overlay) with it.
func (unitKind) Revert(ctx context.Context, env faults.Env, f *labs.Fault, state json.RawMessage) error {
	if len(state) == 0 {
		return nil // Apply failed before installing anything worth undoing; the host goes anyway
	}
	var s unitState
	if err := json.Unmarshal(state, &s); err != nil {
		return fmt.Errorf("systemd.unit state: %w", err)
	}
	if !unitNameRE.MatchString(s.Unit) {
		return fmt.Errorf("systemd.unit state: bad unit %q", s.Unit)
	}
	h, err := env.Host(f.Host)
	if err != nil {
		return nil // the host is gone, and the unit with it
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", h.InitPID())); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	_, _ = systemctl(ctx, h, "disable", "--now", "--quiet", s.Unit)
	if err := os.Remove(h.RootPath(filepath.Join(unitDir, s.Unit))); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", s.Unit, err)
	}
	_, _ = systemctl(ctx, h, "reset-failed", s.Unit)
	_, err = systemctl(ctx, h, "daemon-reload")
	return err
}

// systemctl runs systemctl inside the host.
func systemctl(ctx context.Context, h faults.Host, args ...string) (string, error) {
	cmd := h.Command(ctx, append([]string{"systemctl"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("systemctl %s in host %s: %w: %s", strings.Join(args, " "), h.Name(), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// showProps are read on every poll; Result and ExecMainStatus become
// facts, Requires and After are what dependency-order looks at.
var showProps = []string{"LoadState", "ActiveState", "SubState", "Result", "ExecMainStatus", "NRestarts", "Job", "Requires", "After"}

// waitProps polls `systemctl show` until every wanted property has its
// value: the symptom is there, as the learner will see it.
func waitProps(ctx context.Context, h faults.Host, unit string, want problem, timeout time.Duration) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	args := []string{"show", unit}
	for _, k := range showProps {
		args = append(args, "-p", k)
	}
	var got map[string]string
	for {
		out, err := systemctl(ctx, h, args...)
		if err == nil {
			got = parseShow(out)
			if matches(got, want.props) && (want.holds == nil || want.holds(got)) && journalHas(ctx, h, unit, want.journal) {
				return got, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%s did not show the fault within %s: want %v (journal: %v), systemd says %v", unit, timeout, want.props, want.journal, got)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func matches(got, want map[string]string) bool {
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

func parseShow(out string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m
}

// journalHas reports whether a line of the unit's journal matches re (nil:
// nothing to look for).
func journalHas(ctx context.Context, h faults.Host, unit string, re *regexp.Regexp) bool {
	if re == nil {
		return true
	}
	cmd := h.Command(ctx, "journalctl", "--no-pager", "-q", "-o", "cat", "-u", unit)
	out, err := cmd.Output()
	return err == nil && re.Match(out)
}
