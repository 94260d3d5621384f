package labs

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// catalogFS holds the labs shipped in the binary: labs/<topic>/<name>.yaml.
// The pattern is one level deep so testdata (whose lab files sit two
// levels down, in testdata/good and testdata/bad*) is never embedded.
//
//go:embed */*.yaml
var embeddedLabs embed.FS

// catalogFS is what Catalog reads: the embedded labs (a variable so the
// package's own tests can load a catalog of their making).
var catalogFS fs.FS = embeddedLabs

// Parse decodes and validates one lab file. file is used in error
// positions and stored in Lab.File. When the lab is invalid the error is
// an ErrorList holding every problem, sorted by position, and the Lab is
// nil.
func Parse(file string, data []byte) (*Lab, error) {
	d := newLoader(file)
	root := d.parseDocument(data)
	if root == nil {
		return nil, d.errs.Err()
	}
	l := &Lab{}
	lv := reflect.ValueOf(l).Elem()
	if n := d.deref(root); n != nil {
		if n.Kind != yaml.MappingNode {
			d.errorf(n, "a lab file is a mapping (apiVersion: %s, name: ...), got %s", APIVersion, describe(n))
		} else if d.enter(n) {
			d.record(lv, n)
			d.structValue(n, lv, "lab")
			d.leave()
		}
	}
	if !d.exhausted {
		// Validate even after decoding errors, so one run shows them
		// all; the validator tolerates missing parts.
		d.validate(l)
	}
	if len(d.errs) > 0 {
		d.errs.Sort()
		return nil, truncate(dedupe(d.errs))
	}
	l.File = file
	l.Source = data
	return l, nil
}

// dedupe drops identical consecutive errors (an aliased node decoded
// twice reports its problem twice).
func dedupe(l ErrorList) ErrorList {
	out := l[:0]
	for i, e := range l {
		if i > 0 && *e == *l[i-1] {
			continue
		}
		out = append(out, e)
	}
	return out
}

// maxErrors bounds the errors reported for one file: past that, the file
// is not a lab with mistakes but something else entirely.
const maxErrors = 100

func truncate(l ErrorList) ErrorList {
	if len(l) <= maxErrors {
		return l
	}
	last := l[maxErrors-1]
	more := &Error{File: last.File, Line: last.Line, Col: last.Col, Msg: fmt.Sprintf("too many errors: %d more not shown", len(l)-maxErrors)}
	return append(l[:maxErrors:maxErrors], more)
}

// LoadFile reads and parses one lab file.
func LoadFile(p string) (*Lab, error) {
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("read lab: %w", err)
	}
	return Parse(p, data)
}

// Source says where a lab comes from, for `labctl list` and `describe`.
type Source struct {
	// Embedded is true for labs shipped in the binary.
	Embedded bool
	// Path is the file ("labs/<topic>/<file>.yaml" for embedded labs).
	Path string
}

// SourceOf tells where a loaded lab came from.
func SourceOf(l *Lab) Source {
	data, err := fs.ReadFile(catalogFS, strings.TrimPrefix(l.File, "labs/"))
	embedded := strings.HasPrefix(l.File, "labs/") && err == nil && string(data) == string(l.Source)
	return Source{Embedded: embedded, Path: l.File}
}

// Catalog returns the labs embedded in the binary, sorted by name. Any
// invalid lab, or two labs with the same name, is an error: the catalog
// is tested in CI, so this only fails for a broken build.
func Catalog() ([]*Lab, error) {
	paths, err := fs.Glob(catalogFS, "*/*.yaml")
	if err != nil {
		return nil, fmt.Errorf("list embedded labs: %w", err)
	}
	var (
		labs []*Lab
		errs ErrorList
	)
	for _, p := range paths {
		if strings.HasPrefix(p, "testdata/") {
			continue
		}
		data, err := fs.ReadFile(catalogFS, p)
		if err != nil {
			return nil, fmt.Errorf("read embedded lab: %w", err)
		}
		l, err := Parse("labs/"+p, data)
		if err != nil {
			errs = appendErr(errs, "labs/"+p, err)
			continue
		}
		labs = append(labs, l)
	}
	errs = append(errs, duplicateNames(labs)...)
	if len(errs) > 0 {
		errs.Sort()
		return nil, errs
	}
	sortByName(labs)
	return labs, nil
}

func appendErr(errs ErrorList, file string, err error) ErrorList {
	var el ErrorList
	if errors.As(err, &el) {
		return append(errs, el...)
	}
	return append(errs, &Error{File: file, Line: 1, Col: 1, Msg: err.Error()})
}

func duplicateNames(labs []*Lab) ErrorList {
	var errs ErrorList
	first := map[string]*Lab{}
	for _, l := range labs {
		if f, dup := first[l.Name]; dup {
			errs = append(errs, &Error{File: l.File, Line: 1, Col: 1, Msg: fmt.Sprintf("lab name %q is also used by %s", l.Name, f.File)})
			continue
		}
		first[l.Name] = l
	}
	return errs
}

func sortByName(labs []*Lab) {
	sort.SliceStable(labs, func(i, j int) bool {
		if labs[i].Name != labs[j].Name {
			return labs[i].Name < labs[j].Name
		}
		return labs[i].File < labs[j].File
	})
}

// labFiles lists the lab files under dir, recursively, sorted.
func labFiles(dir string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() {
			if p != dir && (e.Name() == "testdata" || strings.HasPrefix(e.Name(), ".")) {
				return filepath.SkipDir
			}
			return nil
		}
		if ext := path.Ext(e.Name()); ext == ".yaml" || ext == ".yml" {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list labs in %s: %w", dir, err)
	}
	sort.Strings(files)
	return files, nil
}

// loadDirs loads every lab of the extra directories; extra labs with the
// same name in two directories are an error.
func loadDirs(dirs []string) ([]*Lab, error) {
	var paths []string
	for _, dir := range dirs {
		files, err := labFiles(dir)
		if err != nil {
			return nil, err
		}
		paths = append(paths, files...)
	}
	labs, err := loadFiles(paths)
	if err != nil {
		return nil, err
	}
	if errs := duplicateNames(labs); len(errs) > 0 {
		return nil, errs
	}
	return labs, nil
}

func loadFiles(paths []string) ([]*Lab, error) {
	var (
		labs []*Lab
		errs ErrorList
	)
	for _, p := range paths {
		l, err := LoadFile(p)
		if err != nil {
			var el ErrorList
			if !errors.As(err, &el) {
				return nil, err
			}
			errs = append(errs, el...)
			continue
		}
		labs = append(labs, l)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return labs, nil
}

// LoadAll returns the embedded labs and those of extraDirs, sorted by
// name; an extra lab replaces an embedded lab of the same name.
func LoadAll(extraDirs []string) ([]*Lab, error) {
	embedded, err := Catalog()
	if err != nil {
		return nil, err
	}
	extra, err := loadDirs(extraDirs)
	if err != nil {
		return nil, err
	}
	byName := map[string]*Lab{}
	for _, l := range embedded {
		byName[l.Name] = l
	}
	for _, l := range extra {
		byName[l.Name] = l
	}
	out := make([]*Lab, 0, len(byName))
	for _, l := range byName {
		out = append(out, l)
	}
	sortByName(out)
	return out, nil
}

// ErrNotFound is returned (wrapped) by Resolve when no lab has the name.
var ErrNotFound = errors.New("no such lab")

// Resolve finds the lab an argument names: a path to an existing file is
// loaded; anything else is a lab name, looked up first in extraDirs and
// then in the embedded catalog.
func Resolve(arg string, extraDirs []string) (*Lab, error) {
	if st, err := os.Stat(arg); err == nil && st.Mode().IsRegular() {
		return LoadFile(arg)
	}
	extra, err := loadDirs(extraDirs)
	if err != nil {
		return nil, err
	}
	for _, l := range extra {
		if l.Name == arg {
			return l, nil
		}
	}
	embedded, err := Catalog()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, l := range embedded {
		if l.Name == arg {
			return l, nil
		}
		names = append(names, l.Name)
	}
	for _, l := range extra {
		names = append(names, l.Name)
	}
	return nil, fmt.Errorf("%w %q (not a file, and not the name of a lab)%s", ErrNotFound, arg, didYouMean(arg, names))
}

// LoadPaths loads the lab files named, and every *.yaml / *.yml file
// under the directories named, for `labctl validate`. The error is an
// ErrorList with every problem of every file when any is invalid.
func LoadPaths(paths []string) ([]*Lab, error) {
	var files []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("validate: %w", err)
		}
		if !st.IsDir() {
			files = append(files, p)
			continue
		}
		fs, err := labFiles(p)
		if err != nil {
			return nil, err
		}
		files = append(files, fs...)
	}
	return loadFiles(files)
}
