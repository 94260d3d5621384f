package netfault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"

	"github.com/labctl/labctl/faults"
	"github.com/labctl/labctl/labs"
)

// FirewallParams add one nftables rule inside a host.
type FirewallParams struct {
	Port   int    `yaml:"port" json:"port" doc:"destination port matched" required:"true"`
	Proto  string `yaml:"proto,omitempty" json:"proto,omitempty" doc:"tcp (default) or udp"`
	Action string `yaml:"action,omitempty" json:"action,omitempty" doc:"drop (default: silent, clients time out) or reject (clients are refused)"`
	Chain  string `yaml:"chain,omitempty" json:"chain,omitempty" doc:"input (default), output or forward (on a router)"`
	Table  string `yaml:"table,omitempty" json:"table,omitempty" doc:"the inet table holding the rule (default filter)"`
}

// Validate checks what can be checked before facts are known.
func (p *FirewallParams) Validate() error {
	if p.Port < 1 || p.Port > 65535 {
		return &labs.ParamError{Field: "port", Msg: "must be between 1 and 65535"}
	}
	if p.Proto != "tcp" && p.Proto != "udp" {
		return &labs.ParamError{Field: "proto", Msg: fmt.Sprintf("%q is not tcp or udp", p.Proto)}
	}
	if p.Action != "drop" && p.Action != "reject" {
		return &labs.ParamError{Field: "action", Msg: fmt.Sprintf("%q is not drop or reject", p.Action)}
	}
	if p.Chain != "input" && p.Chain != "output" && p.Chain != "forward" {
		return &labs.ParamError{Field: "chain", Msg: fmt.Sprintf("%q is not input, output or forward", p.Chain)}
	}
	if !procName.MatchString(p.Table) {
		return &labs.ParamError{Field: "table", Msg: fmt.Sprintf("%q is not a table name", p.Table)}
	}
	return nil
}

// ruleset is the nft script: a table of its own, so Revert deletes just
// that. Every value in it is a validated number or keyword, and it goes
// to nft on stdin, never through a shell.
func (p *FirewallParams) ruleset() string {
	return fmt.Sprintf(`table inet %[1]s {
	chain %[2]s {
		type filter hook %[2]s priority filter; policy accept;
		%[3]s dport %[4]d counter %[5]s
	}
}
`, p.Table, p.Chain, p.Proto, p.Port, p.Action)
}

type firewallState struct {
	Table string `json:"table"`
}

type firewallKind struct{}

func init() {
	faults.Register(labs.FaultKind{
		Name:      "net.firewall",
		Doc:       "adds an nftables rule inside one host that drops or rejects a port (nft runs inside the host, never on the machine)",
		NewParams: func() any { return &FirewallParams{Proto: "tcp", Action: "drop", Chain: "input", Table: "filter"} },
		Facts: []labs.FactSpec{
			{Name: "table", Doc: "the nftables table (family inet) holding the rule"},
			{Name: "chain", Doc: "the chain"},
			{Name: "port", Doc: "the port matched"},
			{Name: "action", Doc: "drop or reject"},
		},
	}, firewallKind{})
}

func (firewallKind) Apply(ctx context.Context, env faults.Env, f *labs.Fault, params any) (*faults.Applied, error) {
	p := params.(*FirewallParams)
	if _, err := exec.LookPath("nft"); err != nil {
		return nil, errors.New("nft is not installed: install nftables (make deps) to run firewall labs")
	}
	h, err := env.Host(f.Host)
	if err != nil {
		return nil, err
	}
	applied := &faults.Applied{
		State: mustJSON(firewallState{Table: p.Table}),
		Facts: map[string]string{"table": p.Table, "chain": p.Chain, "port": strconv.Itoa(p.Port), "action": p.Action},
	}
	if _, err := run(ctx, h, []byte(p.ruleset()), "nft", "-f", "-"); err != nil {
		return applied, err
	}
	want := fmt.Sprintf("%s dport %d", p.Proto, p.Port)
	return applied, poll(ctx, "nftables rule on "+h.Name(), func() (bool, error) {
		out, err := run(ctx, h, nil, "nft", "list", "table", "inet", p.Table)
		return err == nil && strings.Contains(out, want), err
	})
}

func (firewallKind) Revert(ctx context.Context, env faults.Env, f *labs.Fault, state json.RawMessage) error {
	if len(state) == 0 {
		return nil
	}
	var st firewallState
	if err := json.Unmarshal(state, &st); err != nil {
		return fmt.Errorf("firewall state: %w", err)
	}
	h, err := env.Host(f.Host)
	if err != nil || hostGone(h) {
		return nil
	}
	// The ruleset lives in the host's network namespace and dies with
	// it; on a live host, delete the table unless the learner already did.
	if _, err := run(ctx, h, nil, "nft", "list", "table", "inet", st.Table); err != nil {
		return nil
	}
	_, err = run(ctx, h, nil, "nft", "delete", "table", "inet", st.Table)
	return err
}
