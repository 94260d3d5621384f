package checks

import (
	"bytes"
	"context"
	"fmt"
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
}

// propertyRE is what systemctl accepts as a property name.
var propertyRE = regexp.MustCompile(`^[A-Z][A-Za-z0-9]*$`)

// Validate checks what can be checked before facts are known.
func (p *UnitParams) Validate() error {
	if strings.TrimSpace(p.Unit) == "" {
		return &labs.ParamError{Field: "unit", Msg: "names the unit, e.g. worker.service"}
	}
	if p.Active == "" && p.Sub == "" && p.Enabled == nil && len(p.Properties) == 0 && p.Journal == "" && p.NoJournal == "" {
		return &labs.ParamError{Field: "unit", Msg: "says nothing to check: give active, sub, enabled, properties, journal or no_journal"}
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
		Doc:  "checks a systemd unit of a systemd host: active/sub state, enabled, any systemctl show property, journal lines since the lab started",
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
	var seen []string
	for _, k := range shown {
		seen = append(seen, k+"="+got[k])
	}
	var wanted, wrong []string
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
	res := Result{Seen: strings.Join(seen, ", "), Wanted: strings.Join(wanted, ", "), Pass: len(wrong) == 0}
	if !res.Pass {
		res.Message = p.Unit + ": " + strings.Join(wrong, "; ")
	}
	return res
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
