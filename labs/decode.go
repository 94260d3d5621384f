package labs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"go.yaml.in/yaml/v3"
)

// The strict decoder works on the yaml.Node tree rather than through
// yaml.Unmarshal so that every problem carries the line and column of the
// node that causes it, all problems of a file are reported together, and
// the kind-specific parameters (fault `with`, probe keys) are decoded into
// the registered kind's own type with the same strictness.

// Limits that keep hostile input (alias bombs, self-referencing anchors,
// absurd nesting) from exhausting memory or the stack. Real labs are a few
// hundred nodes deep at most.
const (
	maxNodeVisits = 100_000
	maxDepth      = 64
)

var (
	sizeType     = reflect.TypeFor[Size]()
	durationType = reflect.TypeFor[Duration]()
	modeType     = reflect.TypeFor[Mode]()
	hostsType    = reflect.TypeFor[Hosts]()
	hintType     = reflect.TypeFor[Hint]()
	numberType   = reflect.TypeFor[Number]()
	probeType    = reflect.TypeFor[Probe]()
	faultType    = reflect.TypeFor[Fault]()
	labType      = reflect.TypeFor[Lab]()
)

// Template scopes: which facts a template may reference depends on where
// it is. Host files are placed before any fault runs; a fault's params may
// use facts of the faults before it; everything else sees every fact.
const (
	scopeAll     = -1
	scopeBuiltin = -2
	// scopes >= 0 are "facts of faults before index n".
)

// posKey identifies a decoded value by address and type. The type is part
// of the key because a struct and its first field share an address.
type posKey struct {
	ptr unsafe.Pointer
	typ reflect.Type
}

type mapPosKey struct {
	m   unsafe.Pointer
	key string
}

// tmplSite is a template-tagged string found while decoding, checked once
// the whole lab (and so the set of facts) is known.
type tmplSite struct {
	node  *yaml.Node
	text  string
	scope int
}

type loader struct {
	file string
	errs ErrorList
	// nodes maps decoded values to the YAML node they came from, so the
	// validator can point at the exact line and column.
	nodes     map[posKey]*yaml.Node
	mapKeys   map[mapPosKey]*yaml.Node
	mapVals   map[mapPosKey]*yaml.Node
	templates []tmplSite
	scope     int
	// badNodes are nodes with a decoding error; validating is set once
	// decoding is done.
	badNodes   map[*yaml.Node]bool
	validating bool
	// faultIndex is the index of the fault being decoded: its params may
	// use facts of the faults before it.
	faultIndex int
	// validParams maps the params of each fault that decoded and
	// validated cleanly to its nodes, for checks against its host.
	validParams map[any]paramNodes
	visits      int
	depth       int
	exhausted   bool
}

func newLoader(file string) *loader {
	return &loader{
		file:     file,
		nodes:    map[posKey]*yaml.Node{},
		mapKeys:  map[mapPosKey]*yaml.Node{},
		mapVals:  map[mapPosKey]*yaml.Node{},
		scope:    scopeAll,
		badNodes: map[*yaml.Node]bool{},
	}
}

func (d *loader) errorf(n *yaml.Node, format string, args ...any) {
	if n != nil {
		if d.validating && d.badNodes[n] {
			// The node could not be decoded; a validation error about
			// its (zero) value would only repeat the problem.
			return
		}
		if !d.validating {
			d.badNodes[n] = true
		}
	}
	line, col := 1, 1
	if n != nil && n.Line > 0 {
		line, col = n.Line, n.Column
	}
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Col: col, Msg: fmt.Sprintf(format, args...)})
}

// record remembers which node v was decoded from.
func (d *loader) record(v reflect.Value, n *yaml.Node) {
	if v.CanAddr() {
		d.nodes[posKey{v.Addr().UnsafePointer(), v.Type()}] = n
	}
}

// nodeOf returns the node a value was decoded from; ptr is a pointer to
// the value (a field, a slice element). Nil when it was not in the file.
func (d *loader) nodeOf(ptr any) *yaml.Node {
	v := reflect.ValueOf(ptr)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return nil
	}
	return d.nodes[posKey{v.UnsafePointer(), v.Type().Elem()}]
}

// at returns the node of the first of ptrs that was in the file.
func (d *loader) at(ptrs ...any) *yaml.Node {
	for _, p := range ptrs {
		if n := d.nodeOf(p); n != nil {
			return n
		}
	}
	return nil
}

// enter accounts for one node visit and one level of nesting; it reports
// false (once) when the input exceeds the limits.
func (d *loader) enter(n *yaml.Node) bool {
	if d.exhausted {
		return false
	}
	d.visits++
	d.depth++
	if d.visits > maxNodeVisits {
		d.exhausted = true
		d.errorf(n, "document too large: more than %d nodes after expanding aliases", maxNodeVisits)
		return false
	}
	if d.depth > maxDepth {
		d.exhausted = true
		d.errorf(n, "document nested too deeply (more than %d levels, or an alias that contains itself)", maxDepth)
		return false
	}
	return true
}

func (d *loader) leave() { d.depth-- }

var knownTags = map[string]bool{
	"!!str": true, "!!int": true, "!!float": true, "!!bool": true, "!!null": true,
	"!!map": true, "!!seq": true, "!!merge": true, "!!timestamp": true,
}

// deref follows aliases and rejects tags the format has no use for.
// It returns nil when the node must be skipped.
func (d *loader) deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode; i++ {
		if i > maxDepth {
			d.errorf(n, "alias chain too long")
			return nil
		}
		n = n.Alias
	}
	if n == nil {
		return nil
	}
	if t := n.ShortTag(); !knownTags[t] {
		d.errorf(n, "unsupported YAML tag %q", n.Tag)
		return nil
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names what a node is, for "want X, got Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a sequence"
	case yaml.DocumentNode:
		return "a document"
	}
	switch n.ShortTag() {
	case "!!str", "!!timestamp":
		return "a string"
	case "!!int":
		return "an integer"
	case "!!float":
		return "a number"
	case "!!bool":
		return "a boolean"
	case "!!null":
		return "null"
	}
	return "a scalar"
}

// fieldInfo is one YAML-visible field of a struct.
type fieldInfo struct {
	name       string
	index      int
	required   bool
	template   bool
	kindparams string
	doc        string
}

var fieldCache sync.Map // reflect.Type -> []fieldInfo

// fieldsOf lists the YAML fields of a struct type from its tags.
func fieldsOf(t reflect.Type) []fieldInfo {
	if v, ok := fieldCache.Load(t); ok {
		return v.([]fieldInfo)
	}
	var out []fieldInfo
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		tag := sf.Tag.Get("yaml")
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(sf.Name)
		}
		out = append(out, fieldInfo{
			name:       name,
			index:      i,
			required:   sf.Tag.Get("required") == "true",
			template:   sf.Tag.Get("template") == "true",
			kindparams: sf.Tag.Get("kindparams"),
			doc:        sf.Tag.Get("doc"),
		})
	}
	fieldCache.Store(t, out)
	return out
}

func fieldNames(fs []fieldInfo) []string {
	names := make([]string, len(fs))
	for i, f := range fs {
		names[i] = f.name
	}
	return names
}

// pair is one key/value of a mapping after merge keys are expanded.
type pair struct {
	key   *yaml.Node // as written (for positions)
	name  string
	value *yaml.Node
}

// pairs lists the entries of a mapping node, expanding merge keys (<<)
// and reporting duplicate and non-string keys. Explicit keys override
// merged ones, as YAML specifies.
func (d *loader) pairs(n *yaml.Node) []pair {
	if !d.enter(n) {
		return nil
	}
	defer d.leave()
	var explicit, merged []pair
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			merged = append(merged, d.mergePairs(v)...)
			continue
		}
		kk := d.deref(k)
		if kk == nil {
			continue
		}
		if kk.Kind != yaml.ScalarNode || isNull(kk) {
			d.errorf(k, "mapping key must be a string, got %s", describe(kk))
			continue
		}
		if first, dup := seen[kk.Value]; dup {
			d.errorf(k, "duplicate key %q (first at line %d)", kk.Value, first.Line)
			continue
		}
		seen[kk.Value] = k
		explicit = append(explicit, pair{key: k, name: kk.Value, value: v})
	}
	for _, p := range merged {
		if _, ok := seen[p.name]; ok {
			continue
		}
		seen[p.name] = p.key
		explicit = append(explicit, p)
	}
	return explicit
}

func (d *loader) mergePairs(v *yaml.Node) []pair {
	v = d.deref(v)
	if v == nil {
		return nil
	}
	switch v.Kind {
	case yaml.MappingNode:
		return d.pairs(v)
	case yaml.SequenceNode:
		var out []pair
		seen := map[string]bool{}
		for _, e := range v.Content {
			e = d.deref(e)
			if e == nil {
				continue
			}
			if e.Kind != yaml.MappingNode {
				d.errorf(e, "merge (<<) wants a mapping or a sequence of mappings, got %s", describe(e))
				continue
			}
			// Earlier mappings in a merge sequence take precedence.
			for _, p := range d.pairs(e) {
				if !seen[p.name] {
					seen[p.name] = true
					out = append(out, p)
				}
			}
		}
		return out
	}
	d.errorf(v, "merge (<<) wants a mapping or a sequence of mappings, got %s", describe(v))
	return nil
}

// field describes the destination of a value, for messages and tags.
type field struct {
	name     string
	template bool
}

// value decodes n into v.
func (d *loader) value(use *yaml.Node, v reflect.Value, f field) {
	n := d.deref(use)
	if n == nil {
		return
	}
	if use != n {
		// Errors about this value point at the alias that put it here
		// (the anchored node is marked bad too, so validation is quiet).
		defer func(before int) {
			for _, e := range d.errs[before:] {
				if e.Line == n.Line && e.Col == n.Column {
					e.Line, e.Col = use.Line, use.Column
				}
			}
		}(len(d.errs))
	}
	if !d.enter(n) {
		return
	}
	defer d.leave()
	d.record(v, n)
	if isNull(n) {
		// An explicit null is the same as leaving the key out.
		return
	}
	switch v.Type() {
	case sizeType, durationType, modeType:
		d.unitScalar(n, v, f)
		return
	case hostsType:
		d.hosts(n, v)
		return
	case hintType:
		if n.Kind == yaml.ScalarNode {
			// A plain string is a hint without a gate.
			h := v.Addr().Interface().(*Hint)
			d.value(n, reflect.ValueOf(&h.Text).Elem(), field{name: "text", template: true})
			return
		}
	case numberType:
		if n.Kind == yaml.ScalarNode {
			// number: 64 is short for number: {value: 64}.
			num := v.Addr().Interface().(*Number)
			d.value(n, reflect.ValueOf(&num.Value).Elem(), field{name: "value", template: true})
			return
		}
	case probeType:
		d.probe(n, v.Addr().Interface().(*Probe))
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		elem := reflect.New(v.Type().Elem())
		d.value(n, elem.Elem(), f)
		v.Set(elem)
		d.record(v, n)
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.errorf(n, "%s: want a string, got %s", f.name, describe(n))
			return
		}
		v.SetString(n.Value)
		if f.template {
			d.templates = append(d.templates, tmplSite{node: n, text: n.Value, scope: d.scope})
		}
	case reflect.Bool:
		b, err := strconv.ParseBool(n.Value)
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || err != nil {
			d.errorf(n, "%s: want a boolean (true or false), got %s", f.name, describe(n))
			return
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!float" && bigIntRe.MatchString(n.Value) {
			d.errorf(n, "%s: integer %s is out of range", f.name, n.Value)
			return
		}
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
			d.errorf(n, "%s: want an integer, got %s", f.name, describe(n))
			return
		}
		i, err := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 0, 64)
		if err != nil || v.OverflowInt(i) {
			d.errorf(n, "%s: integer %s is out of range", f.name, n.Value)
			return
		}
		v.SetInt(i)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
			d.errorf(n, "%s: want a non-negative integer, got %s", f.name, describe(n))
			return
		}
		u, err := strconv.ParseUint(strings.ReplaceAll(n.Value, "_", ""), 0, 64)
		if err != nil || v.OverflowUint(u) {
			d.errorf(n, "%s: %s is not a non-negative integer in range", f.name, n.Value)
			return
		}
		v.SetUint(u)
	case reflect.Float32, reflect.Float64:
		t := n.ShortTag()
		if n.Kind != yaml.ScalarNode || (t != "!!int" && t != "!!float") {
			d.errorf(n, "%s: want a number, got %s", f.name, describe(n))
			return
		}
		x, err := strconv.ParseFloat(strings.ReplaceAll(n.Value, "_", ""), 64)
		if err != nil || math.IsInf(x, 0) || math.IsNaN(x) || v.OverflowFloat(x) {
			d.errorf(n, "%s: want a finite number, got %s", f.name, n.Value)
			return
		}
		v.SetFloat(x)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.errorf(n, "%s: want a sequence, got %s", f.name, describe(n))
			return
		}
		// Allocate the final length first so element addresses, which
		// the position table refers to, never move.
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		v.Set(s)
		for i, e := range n.Content {
			if v.Type().Elem() == faultType {
				d.faultIndex = i
			}
			d.value(e, v.Index(i), field{name: fmt.Sprintf("%s[%d]", f.name, i), template: f.template})
		}
	case reflect.Map:
		d.stringMap(n, v, f)
	case reflect.Struct:
		d.structValue(n, v, f.name)
	default:
		d.errorf(n, "%s: cannot decode into %s", f.name, v.Type())
	}
}

// unitScalar decodes a Size, Duration or Mode from the scalar's text, so
// `0644` and "0644" both mean rw-r--r-- whatever YAML thinks of octal.
func (d *loader) unitScalar(n *yaml.Node, v reflect.Value, f field) {
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, "%s: want a scalar, got %s", f.name, describe(n))
		return
	}
	var (
		x   int64
		err error
	)
	switch v.Type() {
	case sizeType:
		var s Size
		s, err = ParseSize(n.Value)
		x = int64(s)
	case durationType:
		var du Duration
		du, err = ParseDuration(n.Value)
		x = int64(du)
	case modeType:
		var m Mode
		m, err = ParseMode(n.Value)
		v.SetUint(uint64(m))
		if err != nil {
			d.errorf(n, "%s: %v", f.name, err)
		}
		return
	}
	if err != nil {
		d.errorf(n, "%s: %v", f.name, err)
		return
	}
	v.SetInt(x)
}

func (d *loader) stringMap(n *yaml.Node, v reflect.Value, f field) {
	if v.Type().Key().Kind() != reflect.String || v.Type().Elem().Kind() != reflect.String {
		d.errorf(n, "%s: cannot decode into %s", f.name, v.Type())
		return
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(n, "%s: want a mapping, got %s", f.name, describe(n))
		return
	}
	m := reflect.MakeMap(v.Type())
	v.Set(m)
	for _, p := range d.pairs(n) {
		val := d.deref(p.value)
		if val == nil {
			continue
		}
		key := reflect.ValueOf(p.name).Convert(v.Type().Key())
		mk := mapPosKey{m.UnsafePointer(), p.name}
		d.mapKeys[mk] = p.key
		d.mapVals[mk] = val
		if isNull(val) {
			m.SetMapIndex(key, reflect.Zero(v.Type().Elem()))
			continue
		}
		if val.Kind != yaml.ScalarNode {
			d.errorf(val, "%s.%s: want a string, got %s", f.name, p.name, describe(val))
			continue
		}
		m.SetMapIndex(key, reflect.ValueOf(val.Value).Convert(v.Type().Elem()))
		if f.template {
			d.templates = append(d.templates, tmplSite{node: val, text: val.Value, scope: d.scope})
		}
	}
}

// mapNodes returns the key and value nodes of a map entry.
func (d *loader) mapNodes(m any, key string) (k, v *yaml.Node) {
	mv := reflect.ValueOf(m)
	if mv.Kind() != reflect.Map || mv.IsNil() {
		return nil, nil
	}
	mk := mapPosKey{mv.UnsafePointer(), key}
	return d.mapKeys[mk], d.mapVals[mk]
}

// structValue decodes a mapping into a struct, strictly.
func (d *loader) structValue(n *yaml.Node, v reflect.Value, what string) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, "%s: want a mapping, got %s", what, describe(n))
		return
	}
	d.structPairs(n, d.pairs(n), v, what, nil)
}

// structPairs decodes already-listed pairs into the struct v. parent is
// where "missing field" errors point; extra are additional accepted key
// names handled by the caller (listed in unknown-field messages).
func (d *loader) structPairs(parent *yaml.Node, pairs []pair, v reflect.Value, what string, extra []string) map[string]*yaml.Node {
	fields := fieldsOf(v.Type())
	byName := map[string]fieldInfo{}
	for _, f := range fields {
		byName[f.name] = f
	}
	seen := map[string]*yaml.Node{}
	var kindParams []pair
	for _, p := range pairs {
		f, ok := byName[p.name]
		if !ok {
			d.unknownField(p.key, p.name, what, append(append([]string{}, extra...), fieldNames(fields)...))
			continue
		}
		seen[p.name] = p.value
		if f.kindparams != "" {
			kindParams = append(kindParams, p)
			continue
		}
		d.value(p.value, v.Field(f.index), field{name: f.name, template: f.template})
	}
	for _, f := range fields {
		if !f.required {
			continue
		}
		val, ok := seen[f.name]
		if !ok {
			d.errorf(parent, "missing required field %q in %s", f.name, what)
			continue
		}
		if dv := d.deref(val); dv != nil && isNull(dv) {
			d.errorf(val, "%s: must have a value", f.name)
		}
	}
	if v.Type() == faultType {
		fault := v.Addr().Interface().(*Fault)
		var with *yaml.Node
		for _, p := range kindParams {
			with = p.value
		}
		d.faultParams(parent, fault, with)
	}
	return seen
}

func (d *loader) unknownField(key *yaml.Node, name, what string, allowed []string) {
	msg := fmt.Sprintf("unknown field %q in %s", name, what)
	if s := suggest(name, allowed); s != "" {
		msg += fmt.Sprintf("; did you mean %q?", s)
	}
	if len(allowed) == 0 {
		msg += "; it takes no fields"
	} else {
		msg += "; expected one of: " + strings.Join(allowed, ", ")
	}
	d.errorf(key, "%s", msg)
}

// hosts decodes the hosts mapping into the ordered slice, Name from the key.
func (d *loader) hosts(n *yaml.Node, v reflect.Value) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, "hosts: want a mapping from host name to host, got %s", describe(n))
		return
	}
	saved := d.scope
	d.scope = scopeBuiltin
	defer func() { d.scope = saved }()
	pairs := d.pairs(n)
	hosts := make(Hosts, 0, len(pairs))
	for _, p := range pairs {
		h := &Host{Name: p.name}
		d.record(reflect.ValueOf(&h.Name).Elem(), p.key)
		hv := reflect.ValueOf(h).Elem()
		if val := d.deref(p.value); val != nil && !isNull(val) {
			if d.enter(val) {
				d.record(hv, val)
				d.structValue(val, hv, fmt.Sprintf("host %q", p.name))
				d.leave()
			}
		} else {
			d.record(hv, p.key)
		}
		hosts = append(hosts, h)
	}
	v.Set(reflect.ValueOf(hosts))
}

// faultParams decodes `with` into the registered kind's params type.
func (d *loader) faultParams(faultNode *yaml.Node, f *Fault, with *yaml.Node) {
	if f.Kind == "" {
		return
	}
	kind, ok := LookupFault(f.Kind)
	if !ok {
		d.errorf(d.at(&f.Kind), "unknown fault kind %q%s", f.Kind, kindList(f.Kind, faultKindNames()))
		return
	}
	what := fmt.Sprintf("with (fault kind %s)", kind.Name)
	if with != nil {
		with = d.deref(with)
		if with == nil {
			return
		}
		if isNull(with) {
			with = nil
		}
	}
	if kind.NewParams == nil {
		if with != nil {
			d.errorf(with, "fault kind %s takes no parameters", kind.Name)
		}
		return
	}
	params := kind.NewParams()
	pv := reflect.ValueOf(params)
	if pv.Kind() != reflect.Pointer || pv.Elem().Kind() != reflect.Struct {
		d.errorf(faultNode, "fault kind %s: params type %T is not a pointer to a struct (a bug in the kind)", kind.Name, params)
		return
	}
	saved := d.scope
	d.scope = d.faultIndex
	defer func() { d.scope = saved }()
	before := len(d.errs)
	var fieldNodes map[string]*yaml.Node
	switch {
	case with == nil:
		fieldNodes = d.structPairs(faultNode, nil, pv.Elem(), what, nil)
	case with.Kind != yaml.MappingNode:
		d.errorf(with, "with: want a mapping, got %s", describe(with))
		return
	default:
		d.record(pv.Elem(), with)
		fieldNodes = d.structPairs(with, d.pairs(with), pv.Elem(), what, nil)
	}
	f.With = params
	if len(d.errs) == before && d.validateParams(params, fieldNodes, with, faultNode) {
		if d.validParams == nil {
			d.validParams = map[any]paramNodes{}
		}
		d.validParams[params] = paramNodes{fieldNodes, []*yaml.Node{with, faultNode}}
	}
}

// paramNodes are where a fault's params came from: each field's node, and
// the nodes to point at when no field is named.
type paramNodes struct {
	fields   map[string]*yaml.Node
	fallback []*yaml.Node
}

// validateParams runs a params type's own Validate, pointing a ParamError
// at its field. It reports whether the params are valid.
func (d *loader) validateParams(params any, fieldNodes map[string]*yaml.Node, nodes ...*yaml.Node) bool {
	pv, ok := params.(ParamValidator)
	if !ok {
		return true
	}
	err := pv.Validate()
	if err == nil {
		return true
	}
	d.paramError(err, fieldNodes, nodes...)
	return false
}

// paramError reports a params error at the field a ParamError names, or
// at the first non-nil node.
func (d *loader) paramError(err error, fieldNodes map[string]*yaml.Node, nodes ...*yaml.Node) {
	var pe *ParamError
	if errors.As(err, &pe) {
		if n := fieldNodes[pe.Field]; n != nil {
			d.errorf(n, "%s", pe.Error())
			return
		}
	}
	for _, n := range nodes {
		if n != nil {
			d.errorf(n, "%v", err)
			return
		}
	}
	d.errorf(nil, "%v", err)
}

// probe decodes a probe mapping: kind and host are the Probe's own keys,
// every other key belongs to the kind's params type.
func (d *loader) probe(n *yaml.Node, p *Probe) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, "probe: want a mapping, got %s", describe(n))
		return
	}
	pairs := d.pairs(n)
	var own, rest []pair
	for _, pr := range pairs {
		if pr.name == "kind" || pr.name == "host" {
			own = append(own, pr)
		} else {
			rest = append(rest, pr)
		}
	}
	d.structPairs(n, own, reflect.ValueOf(p).Elem(), "probe", nil)
	if p.Kind == "" {
		return
	}
	kind, ok := LookupProbe(p.Kind)
	if !ok {
		d.errorf(d.at(&p.Kind), "unknown probe kind %q%s", p.Kind, kindList(p.Kind, probeKindNames()))
		return
	}
	what := fmt.Sprintf("probe (kind %s)", kind.Name)
	if kind.NewParams == nil {
		for _, pr := range rest {
			d.unknownField(pr.key, pr.name, what, []string{"kind", "host"})
		}
		return
	}
	params := kind.NewParams()
	pv := reflect.ValueOf(params)
	if pv.Kind() != reflect.Pointer || pv.Elem().Kind() != reflect.Struct {
		d.errorf(n, "probe kind %s: params type %T is not a pointer to a struct (a bug in the kind)", kind.Name, params)
		return
	}
	before := len(d.errs)
	d.record(pv.Elem(), n)
	fieldNodes := d.structPairs(n, rest, pv.Elem(), what, []string{"kind", "host"})
	p.Params = params
	if len(d.errs) == before {
		d.validateParams(params, fieldNodes, n)
	}
}

func faultKindNames() []string {
	var names []string
	for _, k := range FaultKinds() {
		names = append(names, k.Name)
	}
	return names
}

func probeKindNames() []string {
	var names []string
	for _, k := range ProbeKinds() {
		names = append(names, k.Name)
	}
	return names
}

// kindList completes an unknown-kind message. It names a close match but
// not every kind: the list grows with every driver, and 'labctl kinds'
// prints it with each kind's parameters.
func kindList(name string, names []string) string {
	if s := suggest(name, names); s != "" {
		return fmt.Sprintf("; did you mean %q? ('labctl kinds' lists them)", s)
	}
	return " ('labctl kinds' lists them)"
}

// suggest returns the candidate closest to name if it is close enough to
// be a plausible typo.
func suggest(name string, candidates []string) string {
	best, bestDist := "", 1<<30
	for _, c := range candidates {
		if dist := levenshtein(strings.ToLower(name), strings.ToLower(c)); dist < bestDist {
			best, bestDist = c, dist
		}
	}
	limit := 2
	if len(name) <= 3 {
		limit = 1
	}
	if bestDist == 0 || bestDist > limit {
		return ""
	}
	return best
}

func levenshtein(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 1 << 20 // long strings are never typos of short names
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// bigIntRe matches integers too large for int64, which YAML resolves as floats.
var bigIntRe = regexp.MustCompile(`^[-+]?[0-9_]+$`)

var yamlLineRe = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// parseDocument parses data into a single YAML document node. A syntax
// error, an empty file or a second document is an error.
func (d *loader) parseDocument(data []byte) (doc *yaml.Node) {
	defer func() {
		// yaml.v3 reports errors by panicking internally and recovers
		// itself; this is a last line of defence so Parse never panics.
		if r := recover(); r != nil {
			d.errorf(nil, "YAML parser failed: %v", r)
			doc = nil
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			d.errorf(nil, "empty lab file: want a mapping with apiVersion: %s", APIVersion)
			return nil
		}
		d.yamlError(err)
		return nil
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == nil:
		d.errorf(&next, "a lab file holds one YAML document; found a second one")
		return nil
	case !errors.Is(err, io.EOF):
		d.yamlError(err)
		return nil
	}
	if root.Kind != yaml.DocumentNode || len(root.Content) != 1 {
		d.errorf(&root, "empty lab file: want a mapping with apiVersion: %s", APIVersion)
		return nil
	}
	return root.Content[0]
}

func (d *loader) yamlError(err error) {
	msg := err.Error()
	if m := yamlLineRe.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		// yaml.v3 does not expose the column of a syntax error.
		d.errs = append(d.errs, &Error{File: d.file, Line: line, Col: 1, Msg: "YAML syntax error: " + m[2]})
		return
	}
	d.errorf(nil, "YAML syntax error: %s", strings.TrimPrefix(msg, "yaml: "))
}

// sortedKeys returns a map's keys in order, for deterministic messages.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
