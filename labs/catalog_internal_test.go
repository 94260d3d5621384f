package labs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"
)

func TestEmbeddedCatalogFiles(t *testing.T) {
	files, err := fs.Glob(embeddedLabs, "*/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no labs embedded")
	}
	for _, f := range files {
		if strings.HasPrefix(f, "testdata/") {
			t.Errorf("testdata file %s is embedded", f)
		}
	}
	if _, err := fs.Stat(embeddedLabs, "basics/first-look.yaml"); err != nil {
		t.Errorf("basics/first-look.yaml is not embedded: %v", err)
	}
}

func labText(name string) string {
	return `apiVersion: labctl/v1
name: ` + name + `
title: T
summary: S.
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
}

// withCatalog replaces the embedded catalog for one test.
func withCatalog(t *testing.T, files map[string]string) {
	t.Helper()
	m := fstest.MapFS{}
	for name, text := range files {
		m[name] = &fstest.MapFile{Data: []byte(text)}
	}
	saved := catalogFS
	catalogFS = m
	t.Cleanup(func() { catalogFS = saved })
}

func labNames(ls []*Lab) []string {
	var out []string
	for _, l := range ls {
		out = append(out, l.Name+"="+l.File)
	}
	return out
}

func TestCatalog(t *testing.T) {
	withCatalog(t, map[string]string{
		"net/zeta.yaml":   labText("zeta"),
		"basics/alp.yaml": labText("alpha"),
		"README.md":       "not a lab",
	})
	got, err := Catalog()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"alpha=labs/basics/alp.yaml", "zeta=labs/net/zeta.yaml"}
	if diff := cmp.Diff(want, labNames(got)); diff != "" {
		t.Errorf("Catalog (-want +got):\n%s", diff)
	}
	if src := SourceOf(got[0]); !src.Embedded || src.Path != "labs/basics/alp.yaml" {
		t.Errorf("SourceOf = %+v, want embedded labs/basics/alp.yaml", src)
	}
}

func TestCatalogErrors(t *testing.T) {
	withCatalog(t, map[string]string{
		"a/one.yaml": labText("same"),
		"b/two.yaml": labText("same"),
		"c/bad.yaml": strings.Replace(labText("bad"), "difficulty: beginner", "difficulty: easy", 1),
	})
	_, err := Catalog()
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("Catalog error = %v, want an ErrorList", err)
	}
	want := []string{
		`labs/b/two.yaml:1:1: lab name "same" is also used by labs/a/one.yaml`,
		`labs/c/bad.yaml:5:13: difficulty: "easy" is not one of beginner, intermediate, advanced`,
	}
	if diff := cmp.Diff(want, strings.Split(list.Error(), "\n")); diff != "" {
		t.Errorf("Catalog errors (-want +got):\n%s", diff)
	}
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, text := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestResolveAndLoadAll(t *testing.T) {
	withCatalog(t, map[string]string{
		"basics/alpha.yaml": labText("alpha"),
		"basics/beta.yaml":  labText("beta"),
	})
	extra := t.TempDir()
	writeFiles(t, extra, map[string]string{
		"mine/beta.yaml":      strings.Replace(labText("beta"), "title: T", "title: Mine", 1),
		"mine/deeper/g.yml":   labText("gamma"),
		"testdata/skip.yaml":  "not: a lab",
		"notes.txt":           "ignored",
		".hidden/broken.yaml": "broken: [",
	})
	all, err := LoadAll([]string{extra})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"alpha=labs/basics/alpha.yaml",
		"beta=" + filepath.Join(extra, "mine/beta.yaml"),
		"gamma=" + filepath.Join(extra, "mine/deeper/g.yml"),
	}
	if diff := cmp.Diff(want, labNames(all)); diff != "" {
		t.Errorf("LoadAll (-want +got):\n%s", diff)
	}

	// A name: extra directories first, then the catalog.
	l, err := Resolve("beta", []string{extra})
	if err != nil || l.Title != "Mine" {
		t.Errorf("Resolve(beta) = %v, %v; want the extra dir's beta", l, err)
	}
	if SourceOf(l).Embedded {
		t.Error("an extra-dir lab reports itself as embedded")
	}
	l, err = Resolve("alpha", []string{extra})
	if err != nil || l.File != "labs/basics/alpha.yaml" {
		t.Errorf("Resolve(alpha) = %v, %v; want the embedded alpha", l, err)
	}
	// A path to a file is loaded whatever its name.
	p := filepath.Join(extra, "mine/deeper/g.yml")
	l, err = Resolve(p, nil)
	if err != nil || l.Name != "gamma" || l.File != p {
		t.Errorf("Resolve(%s) = %v, %v; want gamma from that file", p, l, err)
	}
	_, err = Resolve("alpah", nil)
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `did you mean "alpha"?`) {
		t.Errorf("Resolve(alpah) error = %v, want ErrNotFound with a suggestion", err)
	}
}

func TestLoadPaths(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"ok/a.yaml":  labText("a"),
		"bad/b.yaml": strings.Replace(labText("b"), "pids", "pids", 1) + "extra: 1\n",
		"bad/c.yml":  "",
	})
	_, err := LoadPaths([]string{filepath.Join(dir, "ok"), filepath.Join(dir, "bad")})
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("LoadPaths error = %v, want an ErrorList", err)
	}
	want := []string{
		filepath.Join(dir, "bad/b.yaml") + `:15:1: unknown field "extra" in lab; expected one of: apiVersion, name, title, summary, difficulty, duration, topics, seed, briefing, hosts, links, faults, checks, hints, solution, wrong_fixes`,
		filepath.Join(dir, "bad/c.yml") + ":1:1: empty lab file: want a mapping with apiVersion: labctl/v1",
	}
	if diff := cmp.Diff(want, strings.Split(list.Error(), "\n")); diff != "" {
		t.Errorf("LoadPaths errors (-want +got):\n%s", diff)
	}
	ls, err := LoadPaths([]string{filepath.Join(dir, "ok"), filepath.Join(dir, "ok/a.yaml")})
	if err != nil || len(ls) != 2 {
		t.Errorf("LoadPaths(ok dir, ok file) = %d labs, %v; want 2, nil", len(ls), err)
	}
	if _, err := LoadPaths([]string{filepath.Join(dir, "missing")}); err == nil || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadPaths(missing) error = %v, want not-exist", err)
	}
}
