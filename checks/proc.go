package checks

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// procRoot is the machine's /proc. Probes read the machine-side view: the
// verifier lives outside the lab, and a host's PIDs in facts are
// machine-side PIDs.
const procRoot = "/proc"

// proc is what probes need to know about one process.
type proc struct {
	PID     int
	PPID    int
	Comm    string
	State   string // one letter, as ps shows it: R S D Z T t X I
	Cmdline string // NUL separators replaced by spaces
}

// hostProcs lists the processes in the pid namespace of the host whose
// PID 1 is initPID (machine-side PID), init included. A process that
// exits while being read is skipped: the list is a snapshot.
func hostProcs(initPID int) ([]proc, error) {
	want, err := os.Readlink(filepath.Join(procRoot, strconv.Itoa(initPID), "ns", "pid"))
	if err != nil {
		return nil, fmt.Errorf("read pid namespace of the host's init %d: %w", initPID, err)
	}
	entries, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var out []proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ns, err := os.Readlink(filepath.Join(procRoot, e.Name(), "ns", "pid"))
		if err != nil || ns != want {
			continue
		}
		p, err := readProc(pid)
		if err != nil {
			continue
		}
		out = append(out, p)
	}
	return out, nil
}

// readProc reads comm, state, parent and command line of one process.
func readProc(pid int) (proc, error) {
	dir := filepath.Join(procRoot, strconv.Itoa(pid))
	stat, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return proc{}, err
	}
	// comm is in parentheses and may itself contain ") ", so split at the
	// last one.
	open := bytes.IndexByte(stat, '(')
	closing := bytes.LastIndexByte(stat, ')')
	if open < 0 || closing < open {
		return proc{}, fmt.Errorf("malformed %s/stat", dir)
	}
	rest := strings.Fields(string(stat[closing+1:]))
	if len(rest) < 2 {
		return proc{}, fmt.Errorf("malformed %s/stat", dir)
	}
	ppid, err := strconv.Atoi(rest[1])
	if err != nil {
		return proc{}, fmt.Errorf("malformed %s/stat: %w", dir, err)
	}
	cmdline, _ := os.ReadFile(filepath.Join(dir, "cmdline"))
	cmdline = bytes.TrimRight(cmdline, "\x00")
	return proc{
		PID:     pid,
		PPID:    ppid,
		Comm:    string(stat[open+1 : closing]),
		State:   rest[0],
		Cmdline: string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})),
	}, nil
}

// fdCount counts the open file descriptors of a process.
func fdCount(pid int) (int, error) {
	entries, err := os.ReadDir(filepath.Join(procRoot, strconv.Itoa(pid), "fd"))
	if err != nil {
		return 0, err
	}
	return len(entries), nil
}

// stateName spells out a ps state letter for learners.
func stateName(s string) string {
	names := map[string]string{
		"R": "running", "S": "sleeping", "D": "uninterruptible sleep",
		"Z": "zombie", "T": "stopped", "t": "traced", "X": "dead", "I": "idle",
	}
	if n, ok := names[s]; ok {
		return s + " (" + n + ")"
	}
	return s
}

// parsePIDValue parses a rendered pid parameter.
func parsePIDValue(field, s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%s: %q is not a PID", field, s)
	}
	return n, nil
}
