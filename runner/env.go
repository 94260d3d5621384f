package runner

import (
	"errors"

	"github.com/labctl/labctl/runner/sandbox"
)

// EnvError says the machine cannot run labs and what to do about it
// (the CLI exits with code 3).
type EnvError struct {
	Msg  string
	Hint string
}

func (e *EnvError) Error() string {
	if e.Hint == "" {
		return e.Msg
	}
	return e.Msg + " (" + e.Hint + ")"
}

// CheckEnvironment reports whether this process can run labs.
func CheckEnvironment() error {
	err := sandbox.CheckSupport()
	if err == nil {
		return nil
	}
	var se *sandbox.SupportError
	if errors.As(err, &se) {
		return &EnvError{Msg: se.Msg, Hint: se.Hint}
	}
	return &EnvError{Msg: err.Error(), Hint: "run labs in the VM: labctl up --vm"}
}

// sandboxCommand is sandbox.Command; one place to adapt if its shape changes.
var sandboxCommand = sandbox.Command
