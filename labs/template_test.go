package labs_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/labctl/labctl/labs"
)

func TestRender(t *testing.T) {
	facts := map[string]string{"hog.victim": "worker", "app.hostname": "batch-01", "hog.limit": "67108864"}
	for _, tc := range []struct {
		in, want string
	}{
		{"plain text", "plain text"},
		{`{{ fact "hog.victim" }}`, "worker"},
		{`on {{ fact "app.hostname" | printf "%s!" }}`, "on batch-01!"},
		{`{{ fact "hog.limit" | mib }} MiB`, "64 MiB"},
		{`{{ "1536Ki" | mib }}`, "1.5"},
		{`{{ fact "hog.victim" | upper }}`, "WORKER"},
	} {
		got, err := labs.Render(tc.in, facts)
		if err != nil {
			t.Errorf("Render(%q): %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("Render(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if _, err := labs.Render(`{{ fact "nope.x" }}`, facts); err == nil || !strings.Contains(err.Error(), `unknown fact "nope.x"`) {
		t.Errorf("Render of an unknown fact: err = %v, want unknown fact", err)
	}
	if _, err := labs.Render(`{{ fact "x" `, facts); err == nil {
		t.Error("Render of a malformed template: no error")
	}
}

func TestFactRefs(t *testing.T) {
	got := labs.FactRefs(`{{ fact "a.b" }} and {{ if true }}{{ fact "c.d" | printf "%s" }}{{ end }} {{ fact "a.b" }}`)
	if diff := cmp.Diff([]string{"a.b", "c.d"}, got); diff != "" {
		t.Errorf("FactRefs (-want +got):\n%s", diff)
	}
	if got := labs.FactRefs("no template"); got != nil {
		t.Errorf("FactRefs(plain) = %v, want nil", got)
	}
}

type renderInner struct {
	Note string `yaml:"note" template:"true"`
	Raw  string `yaml:"raw"`
}

type renderParams struct {
	Name  string            `yaml:"name" template:"true"`
	Fixed string            `yaml:"fixed"`
	Argv  []string          `yaml:"argv" template:"true"`
	Env   map[string]string `yaml:"env" template:"true"`
	Inner *renderInner      `yaml:"inner"`
	List  []renderInner     `yaml:"list"`
}

func TestRenderParams(t *testing.T) {
	facts := map[string]string{"f.x": "X"}
	p := &renderParams{
		Name:  `n-{{ fact "f.x" }}`,
		Fixed: `{{ fact "f.x" }}`,
		Argv:  []string{"echo", `{{ fact "f.x" }}`},
		Env:   map[string]string{"K": `v{{ fact "f.x" }}`},
		Inner: &renderInner{Note: `{{ fact "f.x" }}`, Raw: `{{ fact "f.x" }}`},
		List:  []renderInner{{Note: `{{ fact "f.x" }}!`}},
	}
	if err := labs.RenderParams(p, facts); err != nil {
		t.Fatal(err)
	}
	want := &renderParams{
		Name:  "n-X",
		Fixed: `{{ fact "f.x" }}`, // not template-tagged: left alone
		Argv:  []string{"echo", "X"},
		Env:   map[string]string{"K": "vX"},
		Inner: &renderInner{Note: "X", Raw: `{{ fact "f.x" }}`},
		List:  []renderInner{{Note: "X!"}},
	}
	if diff := cmp.Diff(want, p); diff != "" {
		t.Errorf("RenderParams (-want +got):\n%s", diff)
	}
	bad := &renderParams{Argv: []string{`{{ fact "missing.y" }}`}}
	if err := labs.RenderParams(bad, facts); err == nil || !strings.Contains(err.Error(), "argv[0]") {
		t.Errorf("RenderParams with an unknown fact: err = %v, want an error naming argv[0]", err)
	}
	if err := labs.RenderParams(renderParams{}, facts); err == nil {
		t.Error("RenderParams of a non-pointer: no error")
	}
}

func TestBuiltinFacts(t *testing.T) {
	l, err := labs.LoadFile("testdata/good/network.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range labs.BuiltinFacts(l) {
		names = append(names, f.Name)
		if f.Doc == "" {
			t.Errorf("fact %s has no doc", f.Name)
		}
	}
	want := []string{
		"instance.id", "instance.seed",
		"client.hostname", "client.init_pid", "client.cgroup", "client.addr", "client.addr.router", "client.addr.server",
		"router.hostname", "router.init_pid", "router.cgroup", "router.addr", "router.addr.client", "router.addr.server",
		"server.hostname", "server.init_pid", "server.cgroup", "server.addr", "server.addr.router", "server.addr.client",
	}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("BuiltinFacts (-want +got):\n%s", diff)
	}
}

func TestHashAnswer(t *testing.T) {
	h := labs.HashAnswer("  SwordFish ")
	if !strings.HasPrefix(h, "sha256:") || len(strings.Split(h, ":")) != 3 {
		t.Fatalf("HashAnswer = %q, want sha256:<salt>:<digest>", h)
	}
	if h2 := labs.HashAnswer("swordfish"); h2 == h {
		t.Error("two hashes of one answer are equal: the salt is not random")
	}
	for _, tc := range []struct {
		answer        string
		caseSensitive bool
		want          bool
	}{
		{"swordfish", false, true},
		{"  SWORDFISH\n", false, true},
		{"swordfish", true, true},
		{"Swordfish", true, false},
		{"swordfis", false, false},
		{"", false, false},
	} {
		if got := labs.MatchHash(h, tc.answer, tc.caseSensitive); got != tc.want {
			t.Errorf("MatchHash(%q, case %v) = %v, want %v", tc.answer, tc.caseSensitive, got, tc.want)
		}
	}
	for _, bad := range []string{"", "sha256:", "md5:00:00", h[:len(h)-2], strings.Replace(h, "sha256", "sha512", 1)} {
		if labs.MatchHash(bad, "swordfish", false) {
			t.Errorf("MatchHash(%q) matched", bad)
		}
	}
	// A freshly made hash is accepted by the loader's hash: matcher.
	src := strings.Replace(minimalLab, `{equals: because}`, `{hash: "`+h+`"}`, 1)
	if _, err := labs.Parse("hash.yaml", []byte(src)); err != nil {
		t.Errorf("lab with a HashAnswer hash: %v", err)
	}
}

const minimalLab = `apiVersion: labctl/v1
name: tiny
title: Tiny
summary: Tiny.
difficulty: beginner
duration: 1m
topics: [t]
briefing: b
hosts:
  app:
checks:
  - id: q
    ask: Why?
    answer: {equals: because}
`

func TestTooManyErrors(t *testing.T) {
	var b strings.Builder
	b.WriteString(minimalLab)
	for i := range 150 {
		b.WriteString("k" + strings.Repeat("x", i%3) + string(rune('a'+i%26)) + strings.Repeat("y", i) + ": 1\n")
	}
	_, err := labs.Parse("many.yaml", []byte(b.String()))
	var list labs.ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("err = %v, want an ErrorList", err)
	}
	if len(list) != 101 || list[100].Msg != "too many errors: 50 more not shown" {
		t.Errorf("got %d errors, last %q; want 100 and a too-many line", len(list), list[len(list)-1].Msg)
	}
}
