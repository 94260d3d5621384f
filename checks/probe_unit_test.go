package checks

import (
	"context"
	"os/exec"
	"strconv"
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
	// verify is what systemd-analyze prints (on stderr, as it does), and
	// verifyExit its exit status.
	verify     string
	verifyExit int
	calls      [][]string
}

func (u *unitTarget) Command(ctx context.Context, host string, argv ...string) (*exec.Cmd, error) {
	u.calls = append(u.calls, argv)
	out := u.show
	switch argv[0] {
	case "journalctl":
		out = u.journal
	case "systemd-analyze":
		return exec.CommandContext(ctx, "sh", "-c", `printf %s "$1" >&2; exit "$2"`, "sh", u.verify, strconv.Itoa(u.verifyExit)), nil
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

// systemd-analyze verify as systemd 252 prints it for the catalog's units.
const (
	verifyExecNotFound = "worker.service: Command /usr/local/sbin/queue-worker is not executable: No such file or directory\n"
	verifyMissingDep   = "billing.service: Failed to create billing.service/start: Unit db-tunnel.service not found.\n"
	verifyUnknownKey   = "/etc/systemd/system/worker.service:6: Unknown key 'ExecStartt' in section [Service], ignoring.\n"
	verifyDropIn       = "/etc/systemd/system/worker.service.d/override.conf:2: Unknown section 'Servce'. Ignoring.\n"
	verifyOtherUnit    = "/etc/systemd/system/dbtunnel.service:3: Unknown key 'Descrption' in section [Unit], ignoring.\n"
)

func TestUnitProbeVerify(t *testing.T) {
	for _, tc := range []struct {
		name    string
		unit    string
		verify  string
		exit    int
		extra   UnitParams // other fields checked alongside
		pass    bool
		msg     string // part of the message
		seen    string // part of Seen
		noState bool   // systemctl show must not run
	}{
		{name: "exec not found", unit: "worker.service", verify: verifyExecNotFound, exit: 1, msg: "Command /usr/local/sbin/queue-worker is not executable", seen: "verify: worker.service: Command", noState: true},
		// systemd 252 exits 0 on this error with some options: the line decides.
		{name: "missing dependency, exit 0", unit: "billing.service", verify: verifyMissingDep, exit: 0, msg: "Unit db-tunnel.service not found", noState: true},
		{name: "unknown key in the file", unit: "worker.service", verify: verifyUnknownKey, exit: 0, msg: "Unknown key 'ExecStartt'"},
		{name: "drop-in", unit: "worker.service", verify: verifyDropIn, exit: 1, msg: "Unknown section 'Servce'"},
		{name: "unit not found", unit: "worker.service", verify: "Unit worker.service not found.\n", exit: 1, msg: "not found"},
		{name: "clean", unit: "worker.service", verify: "", exit: 0, pass: true, seen: "verify: no problem", noState: true},
		{name: "only another unit's problem", unit: "billing.service", verify: verifyOtherUnit, exit: 1, pass: true, seen: "Descrption"},
		{name: "prefix of another unit's name", unit: "worker.service", verify: "old-worker.service: Command /x is not executable: No such file or directory\n", exit: 1, pass: true},
		{name: "verify does not run", unit: "worker.service", verify: "nsenter: failed to execute systemd-analyze: No such file or directory\n", exit: 127, msg: "could not run"},
		{name: "fails silently", unit: "worker.service", verify: "", exit: 1, msg: "could not run"},
		{name: "with state", unit: "worker.service", verify: "", exit: 0, extra: UnitParams{Active: "active"}, msg: `ActiveState is "failed"`, seen: "NRestarts=5, verify: no problem"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := &unitTarget{show: crashLoopShow, verify: tc.verify, verifyExit: tc.exit}
			p := tc.extra
			p.Unit, p.Verify = tc.unit, true
			if err := p.Validate(); err != nil {
				t.Fatal(err)
			}
			res := unitProber{}.Probe(context.Background(), target, "app", &p)
			if res.Pass != tc.pass {
				t.Fatalf("Pass = %v, want %v (%+v)", res.Pass, tc.pass, res)
			}
			if !strings.Contains(res.Message, tc.msg) {
				t.Errorf("Message = %q, want it to contain %q", res.Message, tc.msg)
			}
			if !strings.Contains(res.Seen, tc.seen) {
				t.Errorf("Seen = %q, want it to contain %q", res.Seen, tc.seen)
			}
			if got := target.calls[0]; strings.Join(got, " ") != "systemd-analyze verify --man=no "+tc.unit {
				t.Errorf("first command = %q, want systemd-analyze verify of the unit", got)
			}
			if ran := len(target.calls) > 1; tc.noState && ran {
				t.Errorf("a verify-only check also ran %q", target.calls[1:])
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
