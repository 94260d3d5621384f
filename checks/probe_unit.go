package checks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/labctl/labctl/labs"
)

// UnitParams checks a systemd unit of a host whose PID 1 is systemd
// (hosts.<h>.init: systemd), as `systemctl show` and `journalctl -u` see it.
type UnitParams struct {
	Unit       string            `yaml:"unit" json:"unit" doc:"unit name, e.g. worker.service" required:"true" template:"true"`
	Active     string            `yaml:"active,omitempty" json:"active,omitempty" doc:"wanted ActiveState: active, inactive, failed, activating, ..." template:"true"`
	Sub        string            `yaml:"sub,omitempty" json:"sub,omitempty" doc:"wanted SubState: running, dead, exited, auto-restart, ..." template:"true"`
	Enabled    *bool             `yaml:"enabled,omitempty" json:"enabled,omitempty" doc:"wanted: enabled (UnitFileState enabled) or not"`
	Properties map[string]string `yaml:"properties,omitempty" json:"properties,omitempty" doc:"any systemctl show property and the exact value it must have, e.g. {NRestarts: \"0\", User: worker}" template:"true"`
	Journal    string            `yaml:"journal,omitempty" json:"journal,omitempty" doc:"RE2 expression a journal line of the unit since the lab started must match" template:"true"`
	NoJournal  string            `yaml:"no_journal,omitempty" json:"no_journal,omitempty" doc:"RE2 expression no journal line of the unit since the lab started may match" template:"true"`
	Verify     bool              `yaml:"verify,omitempty" json:"verify,omitempty" doc:"a static pre-check: run systemd-analyze verify on the unit and pass only if it reports no problem of this unit (it finds an ExecStart= program that does not exist, a required unit that does not exist, unknown settings; not runtime failures such as a missing User= or EnvironmentFile=)"`
}

// propertyRE is what systemctl accepts as a property name.
var propertyRE = regexp.MustCompile(`^[A-Z][A-Za-z0-9]*$`)

// Validate checks what can be checked before facts are known.
func (p *UnitParams) Validate() error {
	if strings.TrimSpace(p.Unit) == "" {
		return &labs.ParamError{Field: "unit", Msg: "names the unit, e.g. worker.service"}
	}
	if p.Active == "" && p.Sub == "" && p.Enabled == nil && len(p.Properties) == 0 && p.Journal == "" && p.NoJournal == "" && !p.Verify {
		return &labs.ParamError{Field: "unit", Msg: "says nothing to check: give active, sub, enabled, properties, journal, no_journal or verify"}
	}
	for k := range p.Properties {
		if !propertyRE.MatchString(k) {
			return &labs.ParamError{Field: "properties", Msg: fmt.Sprintf("%q is not a systemctl show property name (e.g. NRestarts)", k)}
		}
	}
	for field, re := range map[string]string{"journal": p.Journal, "no_journal": p.NoJournal} {
		if re != "" && !strings.Contains(re, "{{") {
			if _, err := regexp.Compile(re); err != nil {
				return &labs.ParamError{Field: field, Msg: "invalid regular expression: " + err.Error()}
			}
		}
	}
	return nil
}

type unitProber struct{}

func init() {
	Register(labs.ProbeKind{
		Name: "unit",
		Doc:  "checks a systemd unit of a systemd host: active/sub state, enabled, any systemctl show property, journal lines since the lab started, systemd-analyze verify",
		NewParams: func() any {
			return &UnitParams{}
		},
	}, unitProber{})
}

// unitJournalLines bounds how much journal the probe reads.
const unitJournalLines = "2000"

func (unitProber) Probe(ctx context.Context, t Target, host string, params any) Result {
	p := params.(*UnitParams)
	want := map[string]string{}
	for k, v := range p.Properties {
		want[k] = v
	}
	if p.Active != "" {
		want["ActiveState"] = p.Active
	}
	if p.Sub != "" {
		want["SubState"] = p.Sub
	}
	if p.Enabled != nil {
		want["UnitFileState"] = "enabled"
	}
	names := make([]string, 0, len(want))
	for k := range want {
		names = append(names, k)
	}
	sort.Strings(names)
	var seen, wanted, wrong []string
	if p.Verify {
		lines, err := verifyUnit(ctx, t, host, p.Unit)
		if err != nil {
			return errorResult(err)
		}
		wanted = append(wanted, "systemd-analyze verify reports no problem of "+p.Unit)
		for _, l := range lines {
			seen = append(seen, "verify: "+l)
			if concernsUnit(l, p.Unit) {
				wrong = append(wrong, "systemd-analyze verify: "+l)
			}
		}
		if len(lines) == 0 {
			seen = append(seen, "verify: no problem")
		}
		if len(want) == 0 && p.Journal == "" && p.NoJournal == "" {
			// A static pre-check only: the unit's state does not matter.
			return unitResult(p.Unit, seen, wanted, wrong)
		}
	}
	// What a learner would look at first, shown whatever is checked.
	shown := []string{"LoadState", "ActiveState", "SubState", "Result", "NRestarts"}
	argv := []string{"systemctl", "show", "--no-pager", p.Unit}
	for _, k := range append(append([]string(nil), shown...), names...) {
		argv = append(argv, "-p", k)
	}
	out, err := hostOutput(ctx, t, host, argv...)
	if err != nil {
		return errorResult(err)
	}
	got := parseShow(out)
	state := make([]string, 0, len(shown))
	for _, k := range shown {
		state = append(state, k+"="+got[k])
	}
	seen = append(state, seen...)
	for _, k := range names {
		v := want[k]
		if k == "UnitFileState" && p.Enabled != nil {
			isEnabled := got[k] == "enabled"
			if *p.Enabled {
				wanted = append(wanted, "enabled")
			} else {
				wanted = append(wanted, "not enabled")
			}
			if isEnabled != *p.Enabled {
				wrong = append(wrong, fmt.Sprintf("UnitFileState is %s", got[k]))
			}
			continue
		}
		wanted = append(wanted, k+"="+v)
		if got[k] != v {
			wrong = append(wrong, fmt.Sprintf("%s is %q, not %q", k, got[k], v))
			if !contains(shown, k) {
				seen = append(seen, k+"="+got[k])
			}
		}
	}
	if p.Journal != "" || p.NoJournal != "" {
		// The host booted when the lab started: its journal (volatile,
		// in the host's own overlay) holds only this lab's lines.
		journal, err := hostOutput(ctx, t, host, "journalctl", "--no-pager", "-q", "-o", "cat", "-n", unitJournalLines, "-u", p.Unit)
		if err != nil {
			return errorResult(err)
		}
		if p.Journal != "" {
			re, err := regexp.Compile(p.Journal)
			if err != nil {
				return errorResult(fmt.Errorf("journal: invalid regular expression: %w", err))
			}
			wanted = append(wanted, "a journal line matching "+p.Journal)
			if line := firstMatch(re, journal); line == "" {
				wrong = append(wrong, "no journal line of "+p.Unit+" matches "+p.Journal)
			} else {
				seen = append(seen, "journal: "+line)
			}
		}
		if p.NoJournal != "" {
			re, err := regexp.Compile(p.NoJournal)
			if err != nil {
				return errorResult(fmt.Errorf("no_journal: invalid regular expression: %w", err))
			}
			wanted = append(wanted, "no journal line matching "+p.NoJournal)
			if line := firstMatch(re, journal); line != "" {
				wrong = append(wrong, "the journal of "+p.Unit+" has: "+line)
				seen = append(seen, "journal: "+line)
			}
		}
	}
	return unitResult(p.Unit, seen, wanted, wrong)
}

func unitResult(unit string, seen, wanted, wrong []string) Result {
	res := Result{Seen: strings.Join(seen, ", "), Wanted: strings.Join(wanted, ", "), Pass: len(wrong) == 0}
	if !res.Pass {
		res.Message = unit + ": " + strings.Join(wrong, "; ")
	}
	return res
}

// verifyUnit runs `systemd-analyze verify` on the unit inside the host and
// returns what it printed, one entry a line. Its exit status is not used:
// systemd 252 exits 0 on some errors (with --recursive-errors=no) and 1 on
// mere warnings, so only the lines say what is wrong.
func verifyUnit(ctx context.Context, t Target, host, unit string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, defaultUnitTimeout)
	defer cancel()
	// --man=no: a minimal host has no man pages, and a Documentation=
	// link is no fault of the unit.
	argv := []string{"systemd-analyze", "verify", "--man=no", unit}
	cmd, err := t.Command(ctx, host, argv...)
	if err != nil {
		return nil, fmt.Errorf("enter host %s: %w", host, err)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = runBounded(cmd)
	var lines []string
	for _, l := range strings.Split(out.String(), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	var exit *exec.ExitError
	if err != nil && (!errors.As(err, &exit) || exit.ExitCode() >= 126 || len(lines) == 0) {
		// Not a verdict on the unit: verify did not run (126, 127: the
		// host could not execute it), or failed without saying why.
		return nil, fmt.Errorf("%s in host %s: %w: %s", strings.Join(argv, " "), host, err, firstLines(out.String(), 3))
	}
	return lines, nil
}

// concernsUnit reports whether a line of systemd-analyze verify is about
// the unit itself: prefixed with its name ("worker.service: Command ...
// is not executable"), with its file or a drop-in of it
// ("/etc/systemd/system/worker.service:5: Unknown key ..."), or saying
// the unit does not exist. Lines about other units (its dependencies)
// are shown, not held against it.
func concernsUnit(line, unit string) bool {
	return strings.HasPrefix(line, unit+":") ||
		strings.Contains(line, "/"+unit+":") ||
		strings.Contains(line, "/"+unit+".d/") ||
		line == "Unit "+unit+" not found."
}

// hostOutput runs argv in the host and returns its stdout.
func hostOutput(ctx context.Context, t Target, host string, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, defaultUnitTimeout)
	defer cancel()
	cmd, err := t.Command(ctx, host, argv...)
	if err != nil {
		return "", fmt.Errorf("enter host %s: %w", host, err)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := runBounded(cmd); err != nil {
		return "", fmt.Errorf("%s in host %s: %w: %s", strings.Join(argv[:2], " "), host, err, firstLines(stderr.String(), 3))
	}
	return stdout.String(), nil
}

// defaultUnitTimeout bounds one systemctl/journalctl call.
const defaultUnitTimeout = 10 * time.Second

// parseShow reads `systemctl show` output: one Key=Value a line.
func parseShow(out string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m
}

func firstMatch(re *regexp.Regexp, text string) string {
	for _, line := range strings.Split(text, "\n") {
		if re.MatchString(line) {
			return line
		}
	}
	return ""
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
