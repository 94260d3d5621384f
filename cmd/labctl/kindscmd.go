package main

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/spf13/cobra"

	"github.com/labctl/labctl/labs"
)

func (a *app) kindsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "kinds",
		Short: "List the fault and probe kinds this labctl knows, with their parameters and facts",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			w := a.stdout
			fmt.Fprintln(w, a.bold("FAULT KINDS")+" (faults: - {id, kind, host, with: {...}})")
			faults := labs.FaultKinds()
			if len(faults) == 0 {
				fmt.Fprintln(w, "  (none in this build)")
			}
			for _, k := range faults {
				fmt.Fprintf(w, "\n  %s — %s\n", a.bold(k.Name), k.Doc)
				a.printParams(k.NewParams)
				for _, f := range k.Facts {
					fmt.Fprintf(w, "    fact %s.%s: %s\n", "<id>", f.Name, f.Doc)
				}
			}
			fmt.Fprintln(w, "\n"+a.bold("PROBE KINDS")+" (checks: - {id, probe: {kind, host, ...}})")
			for _, k := range labs.ProbeKinds() {
				fmt.Fprintf(w, "\n  %s — %s\n", a.bold(k.Name), k.Doc)
				a.printParams(k.NewParams)
			}
			return nil
		},
	}
}

// printParams lists a params struct's YAML keys with type and doc.
func (a *app) printParams(newParams func() any) {
	if newParams == nil {
		return
	}
	t := reflect.TypeOf(newParams())
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		req := ""
		if f.Tag.Get("required") == "true" {
			req = ", required"
		}
		fmt.Fprintf(a.stdout, "    %s (%s%s): %s\n", name, typeName(f.Type), req, f.Tag.Get("doc"))
	}
}

func typeName(t reflect.Type) string {
	switch {
	case t == reflect.TypeOf(labs.Size(0)):
		return "size"
	case t == reflect.TypeOf(labs.Duration(0)):
		return "duration"
	case t == reflect.TypeOf(labs.Mode(0)):
		return "mode"
	}
	switch t.Kind() {
	case reflect.Pointer:
		return typeName(t.Elem())
	case reflect.Slice:
		return "list of " + typeName(t.Elem())
	case reflect.Map:
		return "map of " + typeName(t.Elem())
	case reflect.Struct:
		return "mapping"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "integer"
	}
	return t.Kind().String()
}
