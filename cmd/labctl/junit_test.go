package main

import (
	"bytes"
	"encoding/xml"
	"os"
	"path/filepath"
	"testing"
)

// The JUnit XML schema's elements as CI parsers read them (the Jenkins /
// Ant junit.xsd subset), declared independently of the writer's types.
type xsdTestsuites struct {
	XMLName   xml.Name       `xml:"testsuites"`
	Tests     *int           `xml:"tests,attr"`
	Failures  *int           `xml:"failures,attr"`
	Testsuite []xsdTestsuite `xml:"testsuite"`
}

type xsdTestsuite struct {
	Name     *string       `xml:"name,attr"`
	Tests    *int          `xml:"tests,attr"`
	Failures *int          `xml:"failures,attr"`
	Time     *float64      `xml:"time,attr"`
	Testcase []xsdTestcase `xml:"testcase"`
}

type xsdTestcase struct {
	Name      *string  `xml:"name,attr"`
	Classname *string  `xml:"classname,attr"`
	Time      *float64 `xml:"time,attr"`
	Failure   *struct {
		Message string `xml:"message,attr"`
		Type    string `xml:"type,attr"`
		Body    string `xml:",chardata"`
	} `xml:"failure"`
}

// TestJUnitReport runs `labctl test --junit` on the default lab and parses
// the file with encoding/xml into the schema's types.
func TestJUnitReport(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("labs need root (namespaces, cgroups)")
	}
	file := filepath.Join(t.TempDir(), "out.xml")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"test", "--junit", file, "first-look"}, nil, &stdout, &stderr); code != 0 {
		t.Fatalf("labctl test: exit %d\n%s%s", code, stdout.String(), stderr.String())
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var doc xsdTestsuites
	if err := xml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("not JUnit XML: %v\n%s", err, data)
	}
	if doc.Tests == nil || doc.Failures == nil || *doc.Failures != 0 || len(doc.Testsuite) != 1 {
		t.Fatalf("testsuites: %+v\n%s", doc, data)
	}
	s := doc.Testsuite[0]
	if s.Name == nil || *s.Name != "first-look" || s.Tests == nil || *s.Tests != len(s.Testcase) || s.Time == nil {
		t.Fatalf("testsuite attributes: %+v", s)
	}
	phases := map[string]bool{}
	for _, c := range s.Testcase {
		if c.Name == nil || c.Classname == nil || c.Time == nil {
			t.Fatalf("testcase without required attributes: %+v", c)
		}
		if c.Failure != nil {
			t.Errorf("phase %s failed: %s", *c.Name, c.Failure.Message)
		}
		phases[*c.Name] = true
	}
	for _, p := range []string{"up", "broken", "solve", "down"} {
		if !phases[p] {
			t.Errorf("no testcase for phase %s in %v", p, phases)
		}
	}
}

// TestJUnitFailure: a failing phase becomes a <failure> with its message.
func TestJUnitFailure(t *testing.T) {
	doc := buildJUnit(nil, "")
	if doc.Tests != 0 {
		t.Fatalf("empty run: %+v", doc)
	}
	data, err := xml.Marshal(buildJUnit(nil, "- a\n+ b"))
	if err != nil {
		t.Fatal(err)
	}
	var parsed xsdTestsuites
	if err := xml.Unmarshal(data, &parsed); err != nil {
		t.Fatal(err)
	}
	if *parsed.Failures != 1 || parsed.Testsuite[0].Testcase[0].Failure == nil {
		t.Fatalf("residue is not a failure: %s", data)
	}
}
