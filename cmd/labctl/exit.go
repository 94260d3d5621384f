package main

import (
	"errors"
	"fmt"
)

// Exit codes, as DESIGN.md defines them.
const (
	exitOK      = 0
	exitFail    = 1 // checks fail, a self-test failed, an operation failed
	exitUsage   = 2 // usage error or invalid scenario
	exitEnviron = 3 // this machine cannot run labs (not root, missing kernel feature)
)

// exitError carries an exit code through cobra. silent means the message
// was already printed (e.g. validation errors, failing checks).
type exitError struct {
	code   int
	err    error
	silent bool
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

func usageErr(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

func failErr(err error) error { return &exitError{code: exitFail, err: err} }

// silentExit ends with code after the command printed its own output.
func silentExit(code int) error { return &exitError{code: code, silent: true} }

func exitCode(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return exitFail
}
