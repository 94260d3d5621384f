// Command labctl runs incident labs: YAML scenarios that break a throwaway
// piece of a Linux machine for real, for a learner to diagnose and fix.
package main

import (
	"os"

	"github.com/labctl/labctl/internal/reexec"
)

func main() {
	// A re-exec'd helper (a host's init, the enter helper, a broken
	// service) runs its own code and exits here, before the CLI exists.
	if reexec.Init() {
		return
	}
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
