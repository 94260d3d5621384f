// Package reexec runs parts of labctl as separate processes of the same
// binary (moby/sys/reexec's idea): a host's mini-init, the helper that
// enters a host, the processes that play broken services.
//
// A helper is chosen by the LABCTL_HELPER environment variable, not by
// argv[0], so that argv[0] (and comm) can be the service's name and
// `ps aux` shows `worker --config /etc/worker.conf`. Parameters travel on
// an inherited pipe (fd 3), never in argv or the environment, where a
// learner could read them from /proc.
package reexec

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
)

// EnvHelper names the helper a re-exec'd process runs.
const EnvHelper = "LABCTL_HELPER"

// ParamsFD is the file descriptor the parameters arrive on.
const ParamsFD = 3

var (
	mu      sync.Mutex
	helpers = map[string]func() int{}
)

// Register adds a helper. fn returns the process's exit code.
func Register(name string, fn func() int) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := helpers[name]; dup {
		panic(fmt.Sprintf("reexec: helper %q registered twice", name))
	}
	helpers[name] = fn
}

// Init runs the helper this process was started as, if any, and exits.
// main calls it first; it returns false in an ordinary labctl process.
func Init() bool {
	name := os.Getenv(EnvHelper)
	if name == "" {
		return false
	}
	mu.Lock()
	fn, ok := helpers[name]
	mu.Unlock()
	if !ok {
		fmt.Fprintf(os.Stderr, "labctl: unknown helper %q\n", name)
		os.Exit(127)
	}
	os.Unsetenv(EnvHelper)
	os.Exit(fn())
	return true
}

// Self is the path that re-executes this binary.
func Self() string {
	if p, err := os.Executable(); err == nil {
		return p
	}
	return "/proc/self/exe"
}

// Command prepares a helper process. argv0 and args are what ps shows.
// params (may be nil) are JSON-encoded onto fd 3; the returned function
// must be called after Start to write them and close the pipe.
func Command(helper, argv0 string, args []string, params any) (*exec.Cmd, func() error, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(Self(), args...)
	cmd.Args = append([]string{argv0}, args...)
	cmd.Env = append(cleanEnv(), EnvHelper+"="+helper)
	cmd.ExtraFiles = []*os.File{r}
	send := func() error {
		r.Close()
		defer w.Close()
		if params == nil {
			return nil
		}
		return json.NewEncoder(w).Encode(params)
	}
	return cmd, send, nil
}

// cleanEnv is the environment helpers start with: enough to run tools,
// nothing of the caller's.
func cleanEnv() []string {
	return []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"LANG=C.UTF-8",
	}
}

// Params reads the helper's parameters from fd 3 into v and closes it.
func Params(v any) error {
	f := os.NewFile(ParamsFD, "params")
	if f == nil {
		return fmt.Errorf("reexec: no params pipe")
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return fmt.Errorf("reexec: read params: %w", err)
	}
	if len(data) == 0 || v == nil {
		return nil
	}
	return json.Unmarshal(data, v)
}

// SetComm sets the comm (what ps -o comm and /proc/PID/comm show) of
// every thread of this process, so the leader and the threads the Go
// runtime starts later (they inherit it) all carry the service's name.
func SetComm(name string) error {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, t := range tasks {
		if err := os.WriteFile("/proc/self/task/"+t.Name()+"/comm", []byte(name), 0); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return nil
}
