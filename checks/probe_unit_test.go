package checks

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	"github.com/labctl/labctl/labs"
)

// unitTarget answers systemctl and journalctl with canned output, the way a
// systemd host would print it.
type unitTarget struct {
	Target  // only Command is used
	show    string
	journal string
	calls   [][]string
}

func (u *unitTarget) Command(ctx context.Context, host string, argv ...string) (*exec.Cmd, error) {
	u.calls = append(u.calls, argv)
	out := u.show
	if argv[0] == "journalctl" {
		out = u.journal
	}
	return exec.CommandContext(ctx, "printf", "%s", out), nil
}

const crashLoopShow = `LoadState=loaded
ActiveState=failed
SubState=failed
Result=start-limit-hit
NRestarts=5
UnitFileState=enabled
ExecMainStatus=1
`

func TestUnitProbe(t *testing.T) {
	yes, no := true, false
	journal := "Started worker.service - Worker.\nworker: cannot open /var/lib/worker/state: Read-only file system\nworker.service: Start request repeated too quickly.\n"
	tests := []struct {
		name   string
		params UnitParams
		pass   bool
		msg    string // part of the message when failing
	}{
		{"active wanted", UnitParams{Unit: "worker.service", Active: "active"}, false, `ActiveState is "failed", not "active"`},
		{"failed state", UnitParams{Unit: "worker.service", Active: "failed", Sub: "failed"}, true, ""},
		{"enabled", UnitParams{Unit: "worker.service", Enabled: &yes}, true, ""},
		{"not enabled", UnitParams{Unit: "worker.service", Enabled: &no}, false, "UnitFileState is enabled"},
		{"property", UnitParams{Unit: "worker.service", Properties: map[string]string{"Result": "start-limit-hit", "NRestarts": "5"}}, true, ""},
		{"property differs", UnitParams{Unit: "worker.service", Properties: map[string]string{"ExecMainStatus": "203"}}, false, `ExecMainStatus is "1", not "203"`},
		{"journal", UnitParams{Unit: "worker.service", Journal: "repeated too quickly"}, true, ""},
		{"journal missing", UnitParams{Unit: "worker.service", Journal: "status=203/EXEC"}, false, "no journal line"},
		{"no_journal violated", UnitParams{Unit: "worker.service", NoJournal: "Read-only file system"}, false, "Read-only file system"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			target := &unitTarget{show: crashLoopShow, journal: journal}
			p := tc.params
			res := unitProber{}.Probe(context.Background(), target, "app", &p)
			if res.Pass != tc.pass {
				t.Fatalf("Pass = %v, want %v (%+v)", res.Pass, tc.pass, res)
			}
			if !strings.Contains(res.Message, tc.msg) {
				t.Errorf("Message = %q, want it to contain %q", res.Message, tc.msg)
			}
			if !strings.Contains(res.Seen, "ActiveState=failed") {
				t.Errorf("Seen = %q, want the unit's state shown", res.Seen)
			}
			if got := target.calls[0]; got[0] != "systemctl" || got[1] != "show" || got[3] != "worker.service" {
				t.Errorf("first command = %q, want systemctl show of the unit", got)
			}
		})
	}
}

func TestUnitParamsValidate(t *testing.T) {
	for _, tc := range []struct {
		p     UnitParams
		field string
	}{
		{UnitParams{Unit: "x.service"}, "unit"},
		{UnitParams{Unit: "x.service", Properties: map[string]string{"n restarts": "0"}}, "properties"},
		{UnitParams{Unit: "x.service", Journal: "("}, "journal"},
	} {
		err := tc.p.Validate()
		pe, ok := err.(*labs.ParamError)
		if !ok || pe.Field != tc.field {
			t.Errorf("Validate(%+v) = %v, want a ParamError on %s", tc.p, err, tc.field)
		}
	}
	ok := UnitParams{Unit: "x.service", Active: "active", Journal: "{{ fact `a.b` }}"}
	if err := ok.Validate(); err != nil {
		t.Errorf("Validate(valid) = %v", err)
	}
}
