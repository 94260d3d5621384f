package labs_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/labctl/labctl/labs"
)

func TestSchema(t *testing.T) {
	out, err := labs.Schema()
	if err != nil {
		t.Fatal(err)
	}
	again, err := labs.Schema()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, again) {
		t.Error("Schema output differs between two calls")
	}
	if !bytes.HasSuffix(out, []byte("}\n")) {
		t.Error("Schema output does not end with a newline")
	}
	var s struct {
		Schema string `json:"$schema"`
		Defs   map[string]struct {
			Properties           map[string]map[string]any `json:"properties"`
			Required             []string                  `json:"required"`
			AdditionalProperties *bool                     `json:"additionalProperties"`
			AllOf                []any                     `json:"allOf"`
		} `json:"$defs"`
	}
	if err := json.Unmarshal(out, &s); err != nil {
		t.Fatalf("Schema is not valid JSON: %v", err)
	}
	if s.Schema != "https://json-schema.org/draft/2020-12/schema" {
		t.Errorf("$schema = %q", s.Schema)
	}
	lab, ok := s.Defs["Lab"]
	if !ok {
		t.Fatal("no $defs/Lab")
	}
	lt := reflect.TypeFor[labs.Lab]()
	var required []string
	for i := range lt.NumField() {
		f := lt.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		p, ok := lab.Properties[name]
		if !ok {
			t.Errorf("Lab field %s (%s) is not in the schema", f.Name, name)
			continue
		}
		if p["description"] != f.Tag.Get("doc") {
			t.Errorf("schema description of %s = %v, want the doc tag %q", name, p["description"], f.Tag.Get("doc"))
		}
		if f.Tag.Get("required") == "true" {
			required = append(required, name)
		}
	}
	if len(lab.Properties) != len(required)+countOptional(lt) {
		t.Errorf("Lab schema has %d properties, the type %d", len(lab.Properties), len(required)+countOptional(lt))
	}
	if strings.Join(lab.Required, ",") != strings.Join(required, ",") {
		t.Errorf("Lab required = %v, want %v", lab.Required, required)
	}
	if lab.AdditionalProperties == nil || *lab.AdditionalProperties {
		t.Error("Lab schema allows additional properties")
	}
	// One if/then branch per registered kind.
	if got, want := len(s.Defs["Fault"].AllOf), len(labs.FaultKinds()); got != want {
		t.Errorf("Fault schema has %d kind branches, want %d", got, want)
	}
	if got, want := len(s.Defs["Probe"].AllOf), len(labs.ProbeKinds()); got != want {
		t.Errorf("Probe schema has %d kind branches, want %d", got, want)
	}
	for _, want := range []string{`"test.fault"`, `"allocate"`, `"test.cmd"`, `"argv"`, `"beginner"`, `"systemd"`} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("schema does not mention %s", want)
		}
	}
}

func countOptional(t reflect.Type) int {
	n := 0
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name != "-" && f.Tag.Get("required") != "true" {
			n++
		}
	}
	return n
}
