package checks

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/labctl/labctl/labs"
)

var judgeFacts = map[string]string{
	"hog.victim": "worker",
	"hog.pid":    "4242",
	"app.limit":  "67108864",
	"api.port":   "8080",
}

func TestJudge(t *testing.T) {
	num := func(v, tol string) *labs.Matcher {
		return &labs.Matcher{Number: &labs.Number{Value: v, Tolerance: tol}}
	}
	tests := []struct {
		name   string
		m      *labs.Matcher
		answer string
		pass   bool
	}{
		{"equals exact", &labs.Matcher{Equals: "worker"}, "worker", true},
		{"equals trims and folds case", &labs.Matcher{Equals: "OOM killer"}, "  oom   KILLER \n", true},
		{"equals other word", &labs.Matcher{Equals: "worker"}, "workers", false},
		{"equals case sensitive", &labs.Matcher{Equals: "Worker", CaseSensitive: true}, "worker", false},
		{"equals case sensitive same", &labs.Matcher{Equals: "Worker", CaseSensitive: true}, " Worker", true},
		{"equals fact template", &labs.Matcher{Equals: "{{ fact `hog.victim` }}"}, "Worker", true},
		{"equals fact template wrong", &labs.Matcher{Equals: "{{ fact `hog.victim` }}"}, "api", false},

		{"oneOf second", &labs.Matcher{OneOf: []string{"oom killer", "{{ fact `hog.victim` }}"}}, "WORKER", true},
		{"oneOf none", &labs.Matcher{OneOf: []string{"oom killer", "kernel"}}, "systemd", false},

		{"regex whole", &labs.Matcher{Regex: `(the )?(oom|out of memory) killer`}, "The OOM killer", true},
		{"regex anchored", &labs.Matcher{Regex: `work`}, "worker", false},
		{"regex case sensitive", &labs.Matcher{Regex: `work(er)?`, CaseSensitive: true}, "Worker", false},

		{"number plain", num("64", ""), "64", true},
		{"number plain wrong", num("64", ""), "65", false},
		{"number bytes Mi", num("64Mi", ""), "64Mi", true},
		{"number bytes plain answer", num("64Mi", ""), "67108864", true},
		{"number bytes MiB spaced", num("64Mi", ""), "64 MiB", true},
		{"number bytes MiB", num("64Mi", ""), "64MiB", true},
		{"number bytes Gi fraction", num("64Mi", ""), "0.0625Gi", true},
		{"number bytes decimal M is not Mi", num("64Mi", ""), "64M", false},
		{"number decimal M", num("64M", ""), "64000000", true},
		{"number bytes from fact", num("{{ fact `app.limit` }}", ""), "64Mi", true},
		{"number abs tolerance in", num("64Mi", "1Mi"), "65Mi", true},
		{"number abs tolerance out", num("64Mi", "1Mi"), "66Mi", false},
		{"number rel tolerance in", num("100", "5%"), "104.9", true},
		{"number rel tolerance out", num("100", "5%"), "106", false},
		{"number plain tolerance", num("1.5", "0.5"), "1.9", true},
		{"number duration", num("10s", ""), "10s", true},
		{"number duration other unit", num("60s", ""), "1m", true},
		{"number duration plain seconds", num("10s", ""), "10", true},
		{"number duration wrong", num("10s", ""), "11s", false},
		{"number duration vs size", num("10s", ""), "10Mi", false},
		{"number percent", num("25%", ""), "25 %", true},
		{"number percent tolerance", num("25%", "1"), "25.9%", true},
		{"number garbage", num("64", ""), "sixty-four", false},

		{"pid bare", &labs.Matcher{PID: "{{ fact `hog.pid` }}"}, "4242", true},
		{"pid prefixed", &labs.Matcher{PID: "{{ fact `hog.pid` }}"}, "PID 4242", true},
		{"pid colon", &labs.Matcher{PID: "{{ fact `hog.pid` }}"}, "pid: 4242", true},
		{"pid other", &labs.Matcher{PID: "{{ fact `hog.pid` }}"}, "4243", false},
		{"pid not a number", &labs.Matcher{PID: "{{ fact `hog.pid` }}"}, "worker", false},

		{"contains", &labs.Matcher{Contains: "port {{ fact `api.port` }}"}, "It listens on PORT 8080 now", true},
		{"contains not", &labs.Matcher{Contains: "port {{ fact `api.port` }}"}, "port 80", false},
	}
	hashed := labs.HashAnswer("OOM killer")
	tests = append(tests, []struct {
		name   string
		m      *labs.Matcher
		answer string
		pass   bool
	}{
		{"hash", &labs.Matcher{Hash: hashed}, "oom killer", true},
		{"hash case and spaces", &labs.Matcher{Hash: hashed}, " OOM   Killer ", true},
		{"hash wrong", &labs.Matcher{Hash: hashed}, "kernel", false},
	}...)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Judge(tc.m, tc.answer, judgeFacts)
			if err != nil {
				t.Fatalf("Judge: %v", err)
			}
			if got.Pass != tc.pass {
				t.Errorf("Pass = %v, want %v (%+v)", got.Pass, tc.pass, got)
			}
			if got.Seen != tc.answer {
				t.Errorf("Seen = %q, want the answer as given %q", got.Seen, tc.answer)
			}
		})
	}
}

// Messages must not give the expected value away: Wanted is the only
// field that carries it, and the CLI hides it unless asked to reveal.
func TestJudgeMessagesDoNotLeak(t *testing.T) {
	for _, m := range []*labs.Matcher{
		{Equals: "{{ fact `hog.victim` }}"},
		{Number: &labs.Number{Value: "{{ fact `app.limit` }}", Tolerance: "1Mi"}},
		{PID: "{{ fact `hog.pid` }}"},
		{OneOf: []string{"worker", "batch"}},
	} {
		res, err := Judge(m, "nope", judgeFacts)
		if err != nil {
			t.Fatal(err)
		}
		for _, secret := range []string{"worker", "67108864", "64Mi", "4242", "batch"} {
			if strings.Contains(res.Message, secret) {
				t.Errorf("%+v: message %q leaks %q", m, res.Message, secret)
			}
		}
		if res.Wanted == "" {
			t.Errorf("%+v: Wanted is empty; --reveal would show nothing", m)
		}
	}
}

func TestJudgeWanted(t *testing.T) {
	got, err := Judge(&labs.Matcher{Number: &labs.Number{Value: "{{ fact `app.limit` }}", Tolerance: "5%"}}, "1", judgeFacts)
	if err != nil {
		t.Fatal(err)
	}
	want := Result{Pass: false, Seen: "1", Wanted: "67108864 ± 5%", Message: msgWrong}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Judge (-want +got):\n%s", diff)
	}
}

// Errors are about the lab, not the answer.
func TestJudgeLabErrors(t *testing.T) {
	tests := []struct {
		name string
		m    *labs.Matcher
		want string
	}{
		{"missing fact", &labs.Matcher{Equals: "{{ fact `nope` }}"}, "nope"},
		{"bad regex", &labs.Matcher{Regex: `(`}, "answer.regex"},
		{"bad number", &labs.Matcher{Number: &labs.Number{Value: "lots"}}, "expected value"},
		{"bad tolerance", &labs.Matcher{Number: &labs.Number{Value: "10s", Tolerance: "1Mi"}}, "tolerance"},
		{"pid fact not a pid", &labs.Matcher{PID: "{{ fact `hog.victim` }}"}, "not a PID"},
		{"empty matcher", &labs.Matcher{}, "no comparison"},
		{"nil matcher", nil, "no answer matcher"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Judge(tc.m, "x", judgeFacts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}
