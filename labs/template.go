package labs

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"
)

// Templates: every string field tagged `template:"true"` is a Go
// text/template whose only way to reach run-time values is the fact
// function: {{ fact "hog.victim" }}. The function set is deliberately
// small so a lab's templates can be checked statically at load time:
//
//	fact NAME   the fact's value (NAME must be a constant string)
//	mib VALUE   a byte count (a fact or a size like 64Mi) in MiB, e.g. 64
//	lower S     S in lower case
//	upper S     S in upper case
//	trim S      S without leading and trailing white space
//
// plus text/template's builtins (printf, len, index, eq...).

// BuiltinFacts lists the facts every instance of l has before any fault
// runs. They are the only facts host files may use.
func BuiltinFacts(l *Lab) []FactSpec {
	facts := []FactSpec{
		{Name: "instance.id", Doc: "the instance's ID, e.g. a1b2c3"},
		{Name: "instance.seed", Doc: "the seed of the instance's randomised parameters"},
	}
	for _, h := range l.Hosts {
		facts = append(facts,
			FactSpec{Name: h.Name + ".hostname", Doc: "the host's UTS hostname"},
			FactSpec{Name: h.Name + ".init_pid", Doc: "machine-side PID of the host's PID 1"},
			FactSpec{Name: h.Name + ".cgroup", Doc: "the host's cgroup path (relative to the controller root)"},
		)
		first := true
		for _, ln := range l.Links {
			var peer string
			switch h.Name {
			case ln.A:
				peer = ln.B
			case ln.B:
				peer = ln.A
			default:
				continue
			}
			if first {
				facts = append(facts, FactSpec{Name: h.Name + ".addr", Doc: "the host's address on its first link"})
				first = false
			}
			facts = append(facts, FactSpec{Name: h.Name + ".addr." + peer, Doc: "the host's address on the link to " + peer})
		}
	}
	return facts
}

func templateFuncs(fact func(string) (string, error)) template.FuncMap {
	return template.FuncMap{
		"fact":  fact,
		"mib":   mib,
		"lower": strings.ToLower,
		"upper": strings.ToUpper,
		"trim":  strings.TrimSpace,
	}
}

// mib prints a byte count in MiB (fractions only when needed).
func mib(v any) (string, error) {
	var s string
	switch x := v.(type) {
	case string:
		s = x
	case int:
		s = strconv.Itoa(x)
	case int64:
		s = strconv.FormatInt(x, 10)
	case Size:
		s = strconv.FormatInt(int64(x), 10)
	default:
		return "", fmt.Errorf("mib: want a byte count, got %T", v)
	}
	size, err := ParseSize(s)
	if err != nil {
		return "", fmt.Errorf("mib: %w", err)
	}
	return strconv.FormatFloat(float64(size)/(1<<20), 'f', -1, 64), nil
}

// parseTemplate parses text with the lab function set; fact lookups are
// not performed.
func parseTemplate(text string, fact func(string) (string, error)) (*template.Template, error) {
	t, err := template.New("").Option("missingkey=error").Funcs(templateFuncs(fact)).Parse(text)
	if err != nil {
		return nil, errors.New(strings.TrimPrefix(err.Error(), "template: :"))
	}
	return t, nil
}

func noFact(string) (string, error) { return "", errors.New("no facts at load time") }

// IsTemplate reports whether s contains template actions.
func IsTemplate(s string) bool { return strings.Contains(s, "{{") }

// FactRefs returns the fact names a template references, in order of
// appearance, without duplicates. It returns nil for text that does not
// parse.
func FactRefs(text string) []string {
	refs, _, err := templateRefs(text)
	if err != nil {
		return nil
	}
	return refs
}

// templateRefs parses text and lists its fact references; dynamic are
// fact calls whose argument is not a constant string (which the loader
// cannot check).
func templateRefs(text string) (refs []string, dynamic int, err error) {
	if !IsTemplate(text) {
		return nil, 0, nil
	}
	t, err := parseTemplate(text, noFact)
	if err != nil {
		return nil, 0, err
	}
	seen := map[string]bool{}
	var walk func(n parse.Node)
	walk = func(n parse.Node) {
		if n == nil || reflect.ValueOf(n).IsNil() {
			return
		}
		switch n := n.(type) {
		case *parse.ListNode:
			for _, c := range n.Nodes {
				walk(c)
			}
		case *parse.ActionNode:
			walk(n.Pipe)
		case *parse.PipeNode:
			for _, c := range n.Cmds {
				walk(c)
			}
		case *parse.CommandNode:
			if len(n.Args) > 0 {
				if id, ok := n.Args[0].(*parse.IdentifierNode); ok && id.Ident == "fact" {
					if len(n.Args) == 2 {
						if s, ok := n.Args[1].(*parse.StringNode); ok {
							if !seen[s.Text] {
								seen[s.Text] = true
								refs = append(refs, s.Text)
							}
						} else {
							dynamic++
						}
					} else {
						dynamic++
					}
				}
			}
			for _, a := range n.Args {
				walk(a)
			}
		case *parse.IfNode:
			walk(n.Pipe)
			walk(n.List)
			walk(n.ElseList)
		case *parse.RangeNode:
			walk(n.Pipe)
			walk(n.List)
			walk(n.ElseList)
		case *parse.WithNode:
			walk(n.Pipe)
			walk(n.List)
			walk(n.ElseList)
		case *parse.TemplateNode:
			walk(n.Pipe)
		}
	}
	walk(t.Tree.Root)
	for _, tt := range t.Templates() {
		if tt != t && tt.Tree != nil {
			walk(tt.Tree.Root)
		}
	}
	return refs, dynamic, nil
}

// Render executes a template with the instance's facts. A reference to a
// fact the instance does not have is an error.
func Render(text string, facts map[string]string) (string, error) {
	if !IsTemplate(text) {
		return text, nil
	}
	t, err := parseTemplate(text, func(name string) (string, error) {
		v, ok := facts[name]
		if !ok {
			return "", fmt.Errorf("unknown fact %q", name)
		}
		return v, nil
	})
	if err != nil {
		return "", fmt.Errorf("bad template: %w", err)
	}
	var b strings.Builder
	if err := t.Execute(&b, nil); err != nil {
		return "", fmt.Errorf("render template: %w", err)
	}
	return b.String(), nil
}

// RenderParams renders, in place, every template-tagged string field (and
// []string elements and map[string]string values of template-tagged
// fields) reachable from v, a pointer to a struct. The runner calls it on
// a copy of the params before handing them to a driver.
func RenderParams(v any, facts map[string]string) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("RenderParams: want a non-nil pointer, got %T", v)
	}
	return renderValue(rv.Elem(), false, facts, "")
}

func renderValue(v reflect.Value, tmpl bool, facts map[string]string, path string) error {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return nil
		}
		return renderValue(v.Elem(), tmpl, facts, path)
	case reflect.String:
		if !tmpl || !v.CanSet() {
			return nil
		}
		s, err := Render(v.String(), facts)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		v.SetString(s)
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			if err := renderValue(v.Index(i), tmpl, facts, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	case reflect.Map:
		if !tmpl || v.Type().Elem().Kind() != reflect.String {
			return nil
		}
		for _, k := range v.MapKeys() {
			s, err := Render(v.MapIndex(k).String(), facts)
			if err != nil {
				return fmt.Errorf("%s.%v: %w", path, k, err)
			}
			v.SetMapIndex(k, reflect.ValueOf(s).Convert(v.Type().Elem()))
		}
	case reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			sf := t.Field(i)
			if !sf.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				name = sf.Name
			}
			p := name
			if path != "" {
				p = path + "." + name
			}
			if err := renderValue(v.Field(i), sf.Tag.Get("template") == "true", facts, p); err != nil {
				return err
			}
		}
	}
	return nil
}
