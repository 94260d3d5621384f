package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/labctl/labctl/labs"
)

// labSummary is one catalog entry as `labctl list --json` prints it.
type labSummary struct {
	Name       string   `json:"name"`
	Title      string   `json:"title"`
	Summary    string   `json:"summary"`
	Difficulty string   `json:"difficulty"`
	Duration   string   `json:"duration"`
	Topics     []string `json:"topics"`
	Hosts      []string `json:"hosts"`
	File       string   `json:"file"`
}

func summarize(l *labs.Lab) labSummary {
	s := labSummary{
		Name: l.Name, Title: l.Title, Summary: l.Summary, Difficulty: string(l.Difficulty),
		Duration: l.Duration.String(), Topics: l.Topics, File: l.File,
	}
	for _, h := range l.Hosts {
		s.Hosts = append(s.Hosts, h.Name)
	}
	return s
}

func (a *app) listCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the labs of the catalog",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			all, err := labs.LoadAll(a.labDirs)
			if err != nil {
				return a.labError(err)
			}
			if asJSON {
				out := make([]labSummary, 0, len(all))
				for _, l := range all {
					out = append(out, summarize(l))
				}
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(out)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, a.bold("NAME")+"\t"+a.bold("TITLE")+"\t"+a.bold("DIFFICULTY")+"\t"+a.bold("DURATION")+"\t"+a.bold("TOPICS"))
			for _, l := range all {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", l.Name, l.Title, l.Difficulty, l.Duration, strings.Join(l.Topics, ", "))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the catalog as JSON")
	return cmd
}

func (a *app) describeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "describe LAB",
		Short: "Show a lab's summary and briefing",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := labs.Resolve(args[0], a.labDirs)
			if err != nil {
				return a.labError(err)
			}
			fmt.Fprintf(a.stdout, "%s — %s\n", a.bold(l.Name), l.Title)
			fmt.Fprintf(a.stdout, "%s · %s · %s\n\n", l.Difficulty, l.Duration, strings.Join(l.Topics, ", "))
			fmt.Fprintln(a.stdout, wrap(l.Summary, 78))
			fmt.Fprintln(a.stdout)
			fmt.Fprint(a.stdout, renderMarkdown(staticRender(l, l.Briefing), a.color))
			var hosts []string
			for _, h := range l.Hosts {
				hosts = append(hosts, h.Name)
			}
			fmt.Fprintf(a.stdout, "\nhosts: %s · checks: %d · hints: %d\n", strings.Join(hosts, ", "), len(l.Checks), len(l.Hints))
			fmt.Fprintf(a.stdout, "start it with: labctl up %s\n", l.Name)
			return nil
		},
	}
}

// staticRender renders a template before the lab runs: facts known from
// the file alone (host names) are filled in, the others are shown by name.
func staticRender(l *labs.Lab, text string) string {
	facts := map[string]string{}
	for _, ref := range labs.FactRefs(text) {
		facts[ref] = "‹" + ref + "›"
	}
	for _, h := range l.Hosts {
		name := h.Hostname
		if name == "" {
			name = h.Name
		}
		facts[h.Name+".hostname"] = name
	}
	out, err := labs.Render(text, facts)
	if err != nil {
		return text
	}
	return out
}

func (a *app) validateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "validate [FILE|DIR...]",
		Short: "Check lab files strictly; every error as file:line:col: message",
		Long: `Validate lab files. With no argument, the embedded catalog and any --labs
directories are validated. Exit 0 when every file is valid, 2 otherwise.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			var all []*labs.Lab
			var err error
			if len(args) == 0 {
				all, err = labs.LoadAll(a.labDirs)
			} else {
				all, err = labs.LoadPaths(args)
			}
			if err != nil {
				return a.labError(err)
			}
			fmt.Fprintf(a.stdout, "%d lab(s) valid\n", len(all))
			return nil
		},
	}
}

// labError prints the errors of invalid lab files one per line and maps
// them to exit code 2.
func (a *app) labError(err error) error {
	var list labs.ErrorList
	if errors.As(err, &list) {
		for _, e := range list {
			fmt.Fprintln(a.stderr, e.Error())
		}
		return silentExit(exitUsage)
	}
	var one *labs.Error
	if errors.As(err, &one) {
		fmt.Fprintln(a.stderr, one.Error())
		return silentExit(exitUsage)
	}
	if errors.Is(err, os.ErrNotExist) {
		return &exitError{code: exitUsage, err: err}
	}
	return &exitError{code: exitUsage, err: err}
}

func (a *app) schemaCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "schema",
		Short: "Print the JSON Schema of the lab format (generated from the Go types)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := labs.Schema()
			if err != nil {
				return failErr(err)
			}
			_, err = a.stdout.Write(s)
			return err
		},
	}
}

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print labctl's version",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Fprintf(a.stdout, "labctl %s (lab format %s)\n", version, labs.APIVersion)
			return nil
		},
	}
}
