//go:build !linux

package runner

import (
	"errors"
	"os"
)

// Off Linux no lab runs here (labctl up --vm runs it in the VM); these
// only let the CLI build.

const familyV4 = 2 // AF_INET

var errLinuxOnly = errors.New("labs run on Linux only: use the VM (labctl up --vm LAB)")

var errWouldBlock = errors.New("lock held")

func memfdCreate(name string) (int, error) { return -1, errLinuxOnly }

func unmountDetach(path string) error { return errLinuxOnly }

func flockExclusive(f *os.File, nonblock bool) error { return errLinuxOnly }
