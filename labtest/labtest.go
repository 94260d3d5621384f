// Package labtest gives any Go repository testscript commands and
// conditions for lab files, so a lab author's CI proves that a lab still
// breaks and still heals:
//
//	func TestMain(m *testing.M) { testscript.Main(m, nil) }
//
//	func TestLabs(t *testing.T) {
//		testscript.Run(t, testscript.Params{
//			Dir:       "testdata/script",
//			Cmds:      labtest.Cmds(),
//			Condition: labtest.Condition,
//		})
//	}
//
// The commands drive the labctl binary found on PATH (or $LABCTL_BIN):
//
//	lab up LAB [--name N] [--seed S]   start an instance; it is taken down when the script ends
//	lab check [CHECK...]               exit 0 iff the checks pass (use ! lab check to expect failure)
//	lab answer CHECK VALUE             record an answer
//	lab solve                          apply the reference solution
//	lab hint                           show the next hint
//	lab shell [--host H] -- CMD...     run CMD inside a lab host
//	lab down                           take the instance down now
//	exits CODE CMD [ARGS...]           run CMD, expect exactly that exit code
//
// Every command's output is kept for the `stdout` and `stderr` assertions.
// The instance name is in $LAB.
package labtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/rogpeppe/go-internal/testscript"
)

// Binary is the labctl executable the commands run.
func Binary() string {
	if b := os.Getenv("LABCTL_BIN"); b != "" {
		return b
	}
	return "labctl"
}

// Cmds returns the `lab` command for testscript.Params.Cmds.
func Cmds() map[string]func(ts *testscript.TestScript, neg bool, args []string) {
	return map[string]func(ts *testscript.TestScript, neg bool, args []string){
		"lab":   labCmd,
		"exits": exitsCmd,
	}
}

func labCmd(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) == 0 {
		ts.Fatalf("usage: lab up|check|answer|solve|hint|shell|down ...")
	}
	sub, rest := args[0], args[1:]
	bin := Binary()
	switch sub {
	case "up":
		if len(rest) < 1 {
			ts.Fatalf("usage: lab up LAB [--name N] [--seed S]")
		}
		name := flagValue(rest, "--name")
		if name == "" {
			name = fmt.Sprintf("ts-%s-%d", rest[0], os.Getpid())
			rest = append(rest, "--name", name)
		}
		ts.Setenv("LAB", name)
		// Registered before up: a half-made instance is removed too.
		ts.Defer(func() {
			// Down of an instance already down is an error we do not care about.
			_ = exec.Command(bin, "down", name).Run()
		})
		run(ts, neg, append([]string{"up"}, rest...))
	case "check", "solve", "hint", "down", "report":
		run(ts, neg, append([]string{sub, instance(ts)}, rest...))
	case "answer":
		if len(rest) != 2 {
			ts.Fatalf("usage: lab answer CHECK VALUE")
		}
		run(ts, neg, []string{"answer", instance(ts), rest[0], rest[1]})
	case "shell":
		run(ts, neg, append([]string{"shell", instance(ts)}, rest...))
	default:
		ts.Fatalf("lab: unknown subcommand %q", sub)
	}
}

// exitsCmd runs a program and asserts its exact exit code (labctl's codes
// mean different things: 1 checks fail, 2 bad input, 3 unusable machine).
func exitsCmd(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: exits CODE CMD [ARGS...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("exits: bad code %q", args[0])
	}
	err = ts.Exec(args[1], args[2:]...)
	got := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			ts.Fatalf("exits: %v", err)
		}
		got = ee.ExitCode()
	}
	if got != want {
		ts.Fatalf("%s exited with %d, want %d", strings.Join(args[1:], " "), got, want)
	}
}

func instance(ts *testscript.TestScript) string {
	name := ts.Getenv("LAB")
	if name == "" {
		ts.Fatalf("no lab is up in this script (run `lab up LAB` first)")
	}
	return name
}

// run runs labctl and keeps its output for stdout/stderr assertions; neg
// inverts the expectation on its exit status.
func run(ts *testscript.TestScript, neg bool, args []string) {
	err := ts.Exec(Binary(), args...)
	if neg {
		if err == nil {
			ts.Fatalf("labctl %s: unexpected success", strings.Join(args, " "))
		}
		return
	}
	if err != nil {
		ts.Fatalf("labctl %s: %v", strings.Join(args, " "), err)
	}
}

func flagValue(args []string, flag string) string {
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v
		}
	}
	return ""
}
