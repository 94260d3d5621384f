package checks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"time"

	"github.com/labctl/labctl/labs"
)

// CommandParams runs a command inside a host and judges its exit code and
// output.
type CommandParams struct {
	Argv    []string      `yaml:"argv" json:"argv" doc:"the command and its arguments, run inside the host (no shell unless you name one)" required:"true" template:"true"`
	Exit    *int          `yaml:"exit,omitempty" json:"exit,omitempty" doc:"expected exit code (default 0)"`
	Stdout  string        `yaml:"stdout,omitempty" json:"stdout,omitempty" doc:"RE2 regular expression stdout must contain a match of" template:"true"`
	Stderr  string        `yaml:"stderr,omitempty" json:"stderr,omitempty" doc:"RE2 regular expression stderr must contain a match of" template:"true"`
	Timeout labs.Duration `yaml:"timeout,omitempty" json:"timeout,omitempty" doc:"how long the command may run (default 10s)"`
}

// Validate checks what can be checked before facts are known.
func (p *CommandParams) Validate() error {
	if len(p.Argv) == 0 || p.Argv[0] == "" {
		return &labs.ParamError{Field: "argv", Msg: "needs at least the command to run"}
	}
	if p.Timeout <= 0 {
		return &labs.ParamError{Field: "timeout", Msg: "must be positive"}
	}
	for field, re := range map[string]string{"stdout": p.Stdout, "stderr": p.Stderr} {
		if re != "" && !strings.Contains(re, "{{") {
			if _, err := regexp.Compile(re); err != nil {
				return &labs.ParamError{Field: field, Msg: "invalid regular expression: " + err.Error()}
			}
		}
	}
	return nil
}

type commandProber struct{}

func init() {
	Register(labs.ProbeKind{
		Name: "command",
		Doc:  "runs a command inside the host; passes when the exit code and the stdout/stderr patterns match",
		NewParams: func() any {
			exit := 0
			return &CommandParams{Exit: &exit, Timeout: labs.Duration(10 * time.Second)}
		},
	}, commandProber{})
}

// maxShownLines bounds the output quoted in Seen.
const maxShownLines = 5

func (commandProber) Probe(ctx context.Context, t Target, host string, params any) Result {
	p := params.(*CommandParams)
	wantExit := 0
	if p.Exit != nil {
		wantExit = *p.Exit
	}
	wanted := fmt.Sprintf("exit %d", wantExit)
	var stdoutRE, stderrRE *regexp.Regexp
	var err error
	if p.Stdout != "" {
		if stdoutRE, err = regexp.Compile(p.Stdout); err != nil {
			return errorResult(fmt.Errorf("stdout: invalid regular expression: %w", err))
		}
		wanted += ", stdout matching " + p.Stdout
	}
	if p.Stderr != "" {
		if stderrRE, err = regexp.Compile(p.Stderr); err != nil {
			return errorResult(fmt.Errorf("stderr: invalid regular expression: %w", err))
		}
		wanted += ", stderr matching " + p.Stderr
	}
	timeout := p.Timeout.D()
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd, err := t.Command(ctx, host, p.Argv...)
	if err != nil {
		return errorResult(fmt.Errorf("enter host %s: %w", host, err))
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := runBounded(cmd)
	code := -1
	var exitErr *exec.ExitError
	switch {
	case runErr == nil:
		code = 0
	case ctx.Err() != nil:
		return Result{Seen: fmt.Sprintf("still running after %s", timeout), Wanted: wanted,
			Message: fmt.Sprintf("%s did not finish within %s", p.Argv[0], timeout)}
	case errors.As(runErr, &exitErr):
		code = exitErr.ExitCode()
	default:
		return Result{Seen: runErr.Error(), Wanted: wanted, Message: fmt.Sprintf("could not run %s", p.Argv[0])}
	}
	seen := fmt.Sprintf("exit %d", code)
	if s := firstLines(stdout.String(), maxShownLines); s != "" {
		seen += "; stdout: " + s
	}
	if s := firstLines(stderr.String(), maxShownLines); s != "" {
		seen += "; stderr: " + s
	}
	res := Result{Seen: seen, Wanted: wanted}
	switch {
	case code != wantExit:
		res.Message = fmt.Sprintf("%s exited with %d", p.Argv[0], code)
	case stdoutRE != nil && !stdoutRE.Match(stdout.Bytes()):
		res.Message = fmt.Sprintf("%s printed something else", p.Argv[0])
	case stderrRE != nil && !stderrRE.Match(stderr.Bytes()):
		res.Message = fmt.Sprintf("%s reported something else on stderr", p.Argv[0])
	default:
		res.Pass = true
		res.Message = fmt.Sprintf("%s succeeded as expected", p.Argv[0])
	}
	return res
}

// runBounded runs cmd in its own process group and, when its context
// ends, kills the whole group: the process that enters the host (nsenter
// or a re-exec'd labctl) is only the top of what runs, and killing it
// alone would leave the command running inside the lab after the probe
// gave up on it.
func runBounded(cmd *exec.Cmd) error {
	killGroupOnCancel(cmd)
	// A child that escaped the group may still hold the output pipes;
	// do not wait for it past the deadline.
	cmd.WaitDelay = time.Second
	return cmd.Run()
}

// firstLines returns up to n lines of s, joined by " | ", with an
// ellipsis when cut.
func firstLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) == 1 && lines[0] == "" {
		return ""
	}
	cut := len(lines) > n
	if cut {
		lines = lines[:n]
	}
	out := strings.Join(lines, " | ")
	if cut {
		out += " | …"
	}
	return out
}

// errorResult is a failing result for a probe that could not look at all
// (the lab is gone, a parameter is wrong after rendering).
func errorResult(err error) Result {
	return Result{Seen: "error: " + err.Error(), Message: "the probe could not run: " + err.Error()}
}
