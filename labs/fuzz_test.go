package labs_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/labctl/labctl/labs"
)

// FuzzParse: Parse never panics, and returns either a lab or a non-empty
// ErrorList whose errors all carry the file name and a position.
func FuzzParse(f *testing.F) {
	for _, pattern := range []string{"testdata/good/*.yaml", "testdata/bad/*.yaml", "testdata/bad-testkinds/*.yaml"} {
		files, err := filepath.Glob(pattern)
		if err != nil {
			f.Fatal(err)
		}
		for _, file := range files {
			data, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := labs.Parse("fuzz.yaml", data)
		if err == nil {
			if l == nil {
				t.Fatal("Parse returned neither a lab nor an error")
			}
			// A valid lab's templates must all parse.
			for _, c := range l.Checks {
				if c.Answer != nil && labs.IsTemplate(c.Answer.Equals) && labs.FactRefs(c.Answer.Equals) == nil {
					t.Errorf("valid lab with an unparsable equals template %q", c.Answer.Equals)
				}
			}
			return
		}
		if l != nil {
			t.Fatal("Parse returned both a lab and an error")
		}
		var list labs.ErrorList
		if !errors.As(err, &list) || len(list) == 0 {
			t.Fatalf("Parse error %T %v, want a non-empty ErrorList", err, err)
		}
		for _, e := range list {
			if e.File != "fuzz.yaml" || e.Line < 1 || e.Col < 1 || e.Msg == "" {
				t.Fatalf("malformed error %+v", e)
			}
		}
	})
}
