package labs

import (
	"encoding/json"
	"fmt"
	"reflect"
)

// Schema returns the JSON Schema (draft 2020-12) of lab format v1,
// generated from the Go types and the kinds registered in this binary, so
// editors can complete and check lab files (see the yaml-language-server
// comment at the top of the catalog's labs). Output is deterministic:
// sorted keys, two-space indent, trailing newline.
func Schema() ([]byte, error) {
	g := &schemaGen{defs: map[string]any{}}
	root := map[string]any{
		"$schema":     "https://json-schema.org/draft/2020-12/schema",
		"$id":         "https://github.com/labctl/labctl/docs/lab-schema.json",
		"title":       "labctl lab file (" + APIVersion + ")",
		"description": "A labctl incident lab. Fault and probe parameters depend on the kind; see docs/lab-format.md.",
		"$ref":        "#/$defs/Lab",
	}
	g.ref(labType)
	root["$defs"] = g.defs
	out, err := json.MarshalIndent(root, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("marshal schema: %w", err)
	}
	return append(out, '\n'), nil
}

type schemaGen struct {
	defs map[string]any
}

const (
	sizePattern     = `^[0-9]+(\.[0-9]+)?\s*(Ki|Mi|Gi|Ti|k|K|M|G|T)?B?$`
	durationPattern = `^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$`
	modePattern     = `^(0o)?[0-7]{1,5}$`
)

// ref returns a $ref to the definition of a lab type, generating it once.
func (g *schemaGen) ref(t reflect.Type) map[string]any {
	name := t.Name()
	if _, ok := g.defs[name]; !ok {
		g.defs[name] = true // placeholder against recursion
		g.defs[name] = g.structSchema(t, nil)
	}
	return map[string]any{"$ref": "#/$defs/" + name}
}

func withDoc(s map[string]any, doc string) map[string]any {
	if doc != "" {
		s["description"] = doc
	}
	return s
}

// typeSchema is the schema of a value of type t. Types of this package
// get a $defs entry; params types of kinds (from other packages) are
// inlined.
func (g *schemaGen) typeSchema(t reflect.Type) map[string]any {
	switch t {
	case sizeType:
		return map[string]any{"oneOf": []any{
			map[string]any{"type": "integer", "minimum": 0},
			map[string]any{"type": "string", "pattern": sizePattern},
		}}
	case durationType:
		return map[string]any{"oneOf": []any{
			map[string]any{"const": 0},
			map[string]any{"type": "string", "pattern": durationPattern},
		}}
	case modeType:
		return map[string]any{"oneOf": []any{
			map[string]any{"type": "integer", "minimum": 0, "maximum": 07777},
			map[string]any{"type": "string", "pattern": modePattern},
		}}
	case reflect.TypeFor[Difficulty]():
		return map[string]any{"type": "string", "enum": []string{string(Beginner), string(Intermediate), string(Advanced)}}
	case reflect.TypeFor[InitKind]():
		return map[string]any{"type": "string", "enum": []string{string(InitMini), string(InitSystemd)}}
	case hostsType:
		return map[string]any{
			"type":                 "object",
			"minProperties":        1,
			"propertyNames":        map[string]any{"pattern": nameRe.String(), "maxLength": maxHostNameLen},
			"additionalProperties": g.ref(reflect.TypeFor[Host]()),
		}
	case hintType:
		return map[string]any{"oneOf": []any{
			map[string]any{"type": "string", "description": "a hint without a gate"},
			g.ref(hintType),
		}}
	case numberType:
		return map[string]any{"oneOf": []any{
			map[string]any{"type": []string{"number", "string"}, "description": "short for {value: ...}"},
			g.ref(numberType),
		}}
	case probeType:
		return g.ref(probeType)
	}
	switch t.Kind() {
	case reflect.Pointer:
		return g.typeSchema(t.Elem())
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return map[string]any{"type": "integer"}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return map[string]any{"type": "integer", "minimum": 0}
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.Slice, reflect.Array:
		return map[string]any{"type": "array", "items": g.typeSchema(t.Elem())}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": g.typeSchema(t.Elem())}
	case reflect.Struct:
		if t.PkgPath() == labType.PkgPath() {
			return g.ref(t)
		}
		return g.structSchema(t, nil)
	}
	return map[string]any{}
}

// structSchema describes a struct: its fields as properties, required
// fields, no other keys. extra are properties added by the caller.
func (g *schemaGen) structSchema(t reflect.Type, extra map[string]any) map[string]any {
	props := map[string]any{}
	var required []string
	var kindParams string
	for k, v := range extra {
		props[k] = v
	}
	for _, f := range fieldsOf(t) {
		if f.kindparams != "" {
			kindParams = f.kindparams
			if f.kindparams == "fault" {
				props[f.name] = withDoc(map[string]any{"type": "object"}, f.doc)
			}
			continue
		}
		props[f.name] = withDoc(g.typeSchema(t.Field(f.index).Type), f.doc)
		if f.required {
			required = append(required, f.name)
		}
	}
	if t == probeType {
		// Probe.Params is not a YAML key (yaml:"-"): its fields are the
		// probe mapping's other keys.
		kindParams = "probe"
	}
	s := map[string]any{
		"type":       "object",
		"properties": props,
	}
	if len(required) > 0 {
		s["required"] = required
	}
	switch kindParams {
	case "fault":
		s["additionalProperties"] = false
		g.faultBranches(s, props)
	case "probe":
		// Probe keys other than kind and host belong to the kind, so
		// closing the object is left to the per-kind branches.
		g.probeBranches(s, props)
	default:
		s["additionalProperties"] = false
	}
	return s
}

func (g *schemaGen) faultBranches(s, props map[string]any) {
	kinds := FaultKinds()
	if len(kinds) == 0 {
		return
	}
	var names []string
	var branches []any
	for _, k := range kinds {
		names = append(names, k.Name)
		with := map[string]any{"not": map[string]any{}, "description": "kind " + k.Name + " takes no parameters"}
		if k.NewParams != nil {
			with = withDoc(g.paramsSchema(k.NewParams(), nil), k.Doc)
		}
		branches = append(branches, map[string]any{
			"if":   map[string]any{"properties": map[string]any{"kind": map[string]any{"const": k.Name}}, "required": []string{"kind"}},
			"then": map[string]any{"properties": map[string]any{"with": with}},
		})
	}
	kind := props["kind"].(map[string]any)
	kind["enum"] = names
	s["allOf"] = branches
}

func (g *schemaGen) probeBranches(s, props map[string]any) {
	kinds := ProbeKinds()
	if len(kinds) == 0 {
		return
	}
	var names []string
	var branches []any
	for _, k := range kinds {
		names = append(names, k.Name)
		own := map[string]any{"kind": map[string]any{"const": k.Name}}
		if !k.NoHost {
			own["host"] = props["host"]
		}
		var then map[string]any
		if k.NewParams != nil {
			then = g.paramsSchema(k.NewParams(), own)
		} else {
			then = map[string]any{"type": "object", "properties": own, "additionalProperties": false}
		}
		branches = append(branches, map[string]any{
			"if":   map[string]any{"properties": map[string]any{"kind": map[string]any{"const": k.Name}}, "required": []string{"kind"}},
			"then": withDoc(then, k.Doc),
		})
	}
	kind := props["kind"].(map[string]any)
	kind["enum"] = names
	s["allOf"] = branches
}

func (g *schemaGen) paramsSchema(params any, extra map[string]any) map[string]any {
	t := reflect.TypeOf(params)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct {
		return map[string]any{"type": "object"}
	}
	return g.structSchema(t, extra)
}
