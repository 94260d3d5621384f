package systemd

import (
	"reflect"
	"strings"
	"testing"

	"github.com/labctl/labctl/labs"
)

func validParams() *UnitParams {
	enable := true
	return &UnitParams{
		Unit:    "worker.service",
		Content: "[Service]\nExecStart=/usr/local/bin/worker\n",
		Problem: "exec-not-found",
		Enable:  &enable,
		Timeout: labs.Duration(60e9),
	}
}

func TestUnitParamsValidate(t *testing.T) {
	if err := validParams().Validate(); err != nil {
		t.Fatalf("valid params: %v", err)
	}
	for _, tc := range []struct {
		name  string
		edit  func(*UnitParams)
		field string
	}{
		{"path as unit", func(p *UnitParams) { p.Unit = "../etc/passwd.service" }, "unit"},
		{"not a service", func(p *UnitParams) { p.Unit = "worker.timer" }, "unit"},
		{"unknown problem", func(p *UnitParams) { p.Problem = "segfault" }, "problem"},
		{"no service section", func(p *UnitParams) { p.Content = "[Unit]\nDescription=x\n" }, "content"},
		{"no timeout", func(p *UnitParams) { p.Timeout = 0 }, "timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := validParams()
			tc.edit(p)
			pe, ok := p.Validate().(*labs.ParamError)
			if !ok || pe.Field != tc.field {
				t.Errorf("Validate() = %v, want a ParamError on %s", p.Validate(), tc.field)
			}
		})
	}
}

// Every problem is documented in the params' doc string, so lab authors
// (and the schema) see the full list.
func TestProblemsAreDocumented(t *testing.T) {
	p := validParams()
	p.Problem = "nope"
	msg := p.Validate().Error()
	for name, pr := range problems {
		if !strings.Contains(msg, name) {
			t.Errorf("the error for an unknown problem does not list %s: %s", name, msg)
		}
		if len(pr.props) == 0 && pr.journal == nil {
			t.Errorf("problem %s has no observable condition", name)
		}
	}
}

func TestMatchesAndParseShow(t *testing.T) {
	got := parseShow("ActiveState=failed\nResult=exit-code\nExecMainStatus=203\nNRestarts=0\n")
	if !matches(got, problems["exec-not-found"].props) {
		t.Errorf("203 not seen as exec-not-found: %v", got)
	}
	if matches(got, problems["missing-user"].props) {
		t.Errorf("203 seen as missing-user: %v", got)
	}
}

// The schema and `labctl kinds` show the problem param's doc: it must name
// every problem.
func TestProblemParamDocListsProblems(t *testing.T) {
	f, ok := reflect.TypeOf(UnitParams{}).FieldByName("Problem")
	if !ok {
		t.Fatal("no Problem field")
	}
	doc := f.Tag.Get("doc")
	for name := range problems {
		if !strings.Contains(doc, " "+name) {
			t.Errorf("the doc of problem does not list %s: %s", name, doc)
		}
	}
}

// dependency-order is Requires= without After= for the same unit, as
// systemctl show lists them (with systemd's implicit dependencies).
func TestRequiresUnordered(t *testing.T) {
	for _, tc := range []struct {
		requires, after string
		want            bool
	}{
		{"token-fetch.service system.slice sysinit.target", "system.slice sysinit.target basic.target", true},
		{"token-fetch.service system.slice sysinit.target", "basic.target token-fetch.service system.slice sysinit.target", false},
		{"system.slice sysinit.target", "system.slice sysinit.target basic.target", false},
		// Ordered after a different unit with a similar name.
		{"token-fetch.service", "token-fetch.socket", true},
	} {
		props := parseShow("Requires=" + tc.requires + "\nAfter=" + tc.after + "\n")
		if got := requiresUnordered(props); got != tc.want {
			t.Errorf("Requires=%s After=%s: requiresUnordered = %v, want %v", tc.requires, tc.after, got, tc.want)
		}
	}
	if !problems["dependency-order"].holds(parseShow("Requires=a.service\nAfter=\n")) {
		t.Error("dependency-order does not look at the ordering")
	}
}
