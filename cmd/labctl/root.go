package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// app holds what every command shares: where labs come from and how to
// write to the terminal.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	labDirs        []string
	color          bool
	args           []string // as given, for --vm to pass on to the VM
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr, args: args}
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if !errors.As(err, &ee) {
		// cobra's own parsing errors (unknown command, bad arguments)
		ee = &exitError{code: exitFail, err: err}
		if isUsageError(err) {
			ee.code = exitUsage
		}
	}
	if !ee.silent && ee.err != nil {
		fmt.Fprintf(stderr, "labctl: %v\n", ee.err)
		if ee.code == exitUsage && isUsageError(err) {
			fmt.Fprintln(stderr, "Run 'labctl --help' for usage.")
		}
	}
	return ee.code
}

func isUsageError(err error) bool {
	s := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand", "accepts ", "requires ", "invalid argument", "flag needs"} {
		if strings.Contains(s, p) {
			return true
		}
	}
	return false
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "labctl",
		Short: "Run incident labs: real faults on throwaway Linux hosts, diagnosed with real tools",
		Long: `labctl runs incident labs. A lab breaks a throwaway piece of this machine for real
(a process the kernel OOM-kills, zombies nobody reaps, a namespace without a route),
you diagnose it with ps, strace, lsof, dmesg, ip, ss and dig, and labctl checks
whether your diagnosis and your fix are right.

  labctl list                 the catalog
  labctl up first-look        start a lab, then: labctl shell
  labctl answer CHECK VALUE   answer a question;  labctl check   grade it
  labctl down                 remove the lab without a trace`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			a.resolveOptions(cmd)
			return nil
		},
	}
	root.SetVersionTemplate("labctl {{.Version}}\n")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &exitError{code: exitUsage, err: err}
	})
	root.PersistentFlags().StringArray("labs", nil, "also load labs from this directory or file (repeatable; also $LABCTL_LABS, colon-separated)")
	root.PersistentFlags().Bool("no-color", false, "never colour the output (also $NO_COLOR)")

	root.AddCommand(
		a.listCmd(), a.describeCmd(), a.validateCmd(), a.schemaCmd(), a.kindsCmd(), a.rootfsCmd(), a.versionCmd(),
	)
	a.addLifecycleCmds(root)
	a.addSessionCmds(root)
	a.addVMCmds(root)
	return root
}

func (a *app) resolveOptions(cmd *cobra.Command) {
	dirs, _ := cmd.Flags().GetStringArray("labs")
	if env := os.Getenv("LABCTL_LABS"); env != "" {
		for _, d := range filepath.SplitList(env) {
			if d != "" {
				dirs = append(dirs, d)
			}
		}
	}
	a.labDirs = dirs
	noColor, _ := cmd.Flags().GetBool("no-color")
	_, envNoColor := os.LookupEnv("NO_COLOR")
	a.color = !noColor && !envNoColor && isTerminal(a.stdout)
}

// isTerminal reports whether w is a terminal: colour and progress lines
// are for people, never for pipes and files.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	return fdIsTerminal(f.Fd())
}

// exactArgs and rangeArgs turn cobra's argument checks into usage errors.
func exactArgs(n int) cobra.PositionalArgs { return rangeArgs(n, n) }

func rangeArgs(min, max int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < min || (max >= 0 && len(args) > max) {
			want := fmt.Sprintf("%d", min)
			switch {
			case max < 0:
				want = fmt.Sprintf("at least %d", min)
			case max != min:
				want = fmt.Sprintf("%d to %d", min, max)
			}
			return usageErr("%s: want %s argument(s), got %d (see 'labctl %s --help')", cmd.CommandPath(), want, len(args), cmd.Name())
		}
		return nil
	}
}
