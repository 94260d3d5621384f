package fs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/labctl/labctl/internal/reexec"
)

// The services of this package are one helper, labctl re-exec'd inside
// the host under the service's name, in one of a few roles. It opens its
// log as root (as a daemon started by its supervisor does), then drops to
// its lab user for good before it touches anything else, so the kernel
// judges every access as that user's.

const serviceHelper = "fs.service"

// Roles of the service helper.
const (
	roleWorker   = "worker"   // reads a config, writes a state file in its data directory
	roleWriter   = "writer"   // appends to a file (or creates small files), after an optional fill
	roleReporter = "reporter" // keeps its report in a shared directory
	roleCleaner  = "cleaner"  // removes every file of a shared directory
	roleProc     = "proc"     // idles with a limit, an open file, an environment and a netns of its own
)

// serviceParams reach the helper out of sight (fd 3).
type serviceParams struct {
	Role      string `json:"role"`
	Name      string `json:"name"`
	User      string `json:"user,omitempty"` // "" = stay root
	Log       string `json:"log"`
	Heartbeat string `json:"heartbeat,omitempty"` // rewritten after each successful cycle

	Config string `json:"config,omitempty"` // worker
	Data   string `json:"data,omitempty"`   // worker: its data directory

	File   string `json:"file,omitempty"`   // writer (bytes), reporter: the file
	Dir    string `json:"dir,omitempty"`    // writer (inodes): where small files go; cleaner: the shared dir
	Inodes bool   `json:"inodes,omitempty"` // writer: one small file per record
	Fill   bool   `json:"fill,omitempty"`   // writer: fill the filesystem first

	Proc *procSetup `json:"proc,omitempty"` // proc: what /proc shows of it
}

// cycle is how often a service does its work.
const cycle = 300 * time.Millisecond

func init() { reexec.Register(serviceHelper, runService) }

func runService() int {
	var p serviceParams
	if err := reexec.Params(&p); err != nil {
		fmt.Fprintln(os.Stderr, "fs.service:", err)
		return 2
	}
	if p.Role == roleProc && !p.Proc.Stage2 {
		return procStage1(p) // only returns on failure
	}
	_ = reexec.SetComm(p.Name)
	logFile, err := os.OpenFile(p.Log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: open log: %v\n", p.Name, err)
		return 1
	}
	l := &serviceLog{f: logFile, name: p.Name}
	if p.User != "" {
		if err := dropTo(p.User); err != nil {
			l.printf("cannot switch to user %s: %v", p.User, err)
			return 1
		}
	}
	l.printf("started as uid %d", os.Getuid())
	switch p.Role {
	case roleWorker:
		loop(l, p, func() error { return workOnce(p) })
	case roleWriter:
		if p.Fill {
			fill(p)
		}
		n := 0
		loop(l, p, func() error { n++; return writeOnce(p, n) })
	case roleReporter:
		made := false
		loop(l, p, func() error { return reportOnce(l, p, &made) })
	case roleProc:
		procIdle(l, p)
	case roleCleaner:
		for {
			cleanOnce(l, p)
			time.Sleep(cycle)
		}
	}
	l.printf("unknown role %q", p.Role)
	return 2
}

// loop runs one unit of work per cycle, logs each new error (a real
// service repeats itself less than once per cycle) and proves each success
// with the heartbeat.
func loop(l *serviceLog, p serviceParams, work func() error) {
	last := ""
	for {
		if err := work(); err != nil {
			if msg := err.Error(); msg != last {
				l.printf("error: %s", msg)
				last = msg
			}
		} else {
			if last != "" {
				l.printf("recovered")
				last = ""
			}
			if p.Heartbeat != "" {
				_ = os.WriteFile(p.Heartbeat, []byte(strconv.FormatInt(time.Now().Unix(), 10)+"\n"), 0o644)
			}
		}
		time.Sleep(cycle)
	}
}

// workOnce reads the config and saves state into the data directory.
func workOnce(p serviceParams) error {
	conf, err := os.ReadFile(p.Config)
	if err != nil {
		return fmt.Errorf("cannot load configuration: %w", err)
	}
	state := filepath.Join(p.Data, "state.db")
	if err := os.WriteFile(state, fmt.Appendf(nil, "config %d bytes, saved %s\n", len(conf), time.Now().UTC().Format(time.RFC3339)), 0o640); err != nil {
		return fmt.Errorf("cannot save state: %w", err)
	}
	return nil
}

var record = []byte("2026-11-30T07:00:00Z INFO order 1042 processed in 12ms by worker-3 (queue depth 17)\n")

// fill writes until the filesystem refuses: bytes into one file, or one
// small file per record until the inodes run out.
func fill(p serviceParams) {
	if p.Inodes {
		for i := 0; ; i++ {
			if err := os.WriteFile(filepath.Join(p.Dir, fmt.Sprintf("msg-%06d", i)), record, 0o644); err != nil {
				return
			}
		}
	}
	f, err := os.OpenFile(p.File, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	chunk := []byte(strings.Repeat(string(record), 512))
	for {
		if _, err := f.Write(chunk); err != nil {
			break
		}
	}
	for { // the last partial block
		if _, err := f.Write(record); err != nil {
			return
		}
	}
}

// writeOnce appends one record (or creates one small file), reopening
// each time as a logger that plays well with rotation does.
func writeOnce(p serviceParams, n int) error {
	if p.Inodes {
		name := filepath.Join(p.Dir, fmt.Sprintf("new-%d-%06d", os.Getpid(), n%1000))
		return os.WriteFile(name, record, 0o644)
	}
	f, err := os.OpenFile(p.File, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(record)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", p.File, err)
	}
	return nil
}

// reportOnce keeps the report in place, recreating it when it vanished.
func reportOnce(l *serviceLog, p serviceParams, made *bool) error {
	if _, err := os.Stat(p.File); err == nil {
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if *made {
		l.printf("%s is missing: someone deleted it; regenerating", p.File)
	}
	if err := os.WriteFile(p.File, fmt.Appendf(nil, "nightly report of %s\n", p.User), 0o644); err != nil {
		return err
	}
	*made = true
	return nil
}

// cleanOnce removes every regular file of the shared directory: a sweeper
// written for its own temporary files that never checks whose they are.
func cleanOnce(l *serviceLog, p serviceParams) {
	ents, err := os.ReadDir(p.Dir)
	if err != nil {
		l.printf("error: %v", err)
		return
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		path := filepath.Join(p.Dir, e.Name())
		if err := os.Remove(path); err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				l.once("cannot remove "+path, "cannot remove %s: %v", path, errors.Unwrap(err))
			}
			continue
		}
		l.printf("removed %s", path)
	}
}

// dropTo switches every thread to user: its groups from the host's
// /etc/group, then gid, then uid (Go applies set*id to all threads).
func dropTo(user string) error {
	uid, gid, err := lookupUser(user)
	if err != nil {
		return err
	}
	groups, err := groupsOf(user, gid)
	if err != nil {
		return err
	}
	if err := syscall.Setgroups(groups); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setresgid(gid, gid, gid); err != nil {
		return fmt.Errorf("setresgid: %w", err)
	}
	if err := syscall.Setresuid(uid, uid, uid); err != nil {
		return fmt.Errorf("setresuid: %w", err)
	}
	return nil
}

func lookupUser(name string) (uid, gid int, err error) {
	data, err := os.ReadFile("/etc/passwd")
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(line, ":")
		if len(f) >= 4 && f[0] == name {
			uid, err1 := strconv.Atoi(f[2])
			gid, err2 := strconv.Atoi(f[3])
			if err := errors.Join(err1, err2); err != nil {
				return 0, 0, fmt.Errorf("user %s: %w", name, err)
			}
			return uid, gid, nil
		}
	}
	return 0, 0, fmt.Errorf("no user %s in /etc/passwd", name)
}

func groupsOf(user string, primary int) ([]int, error) {
	data, err := os.ReadFile("/etc/group")
	if err != nil {
		return nil, err
	}
	out := []int{primary}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(line, ":")
		if len(f) < 4 {
			continue
		}
		for _, m := range strings.Split(f[3], ",") {
			if m == user {
				if gid, err := strconv.Atoi(f[2]); err == nil && gid != primary {
					out = append(out, gid)
				}
			}
		}
	}
	return out, nil
}

// serviceLog writes timestamped lines the way a small daemon does.
type serviceLog struct {
	f    *os.File
	name string
	seen map[string]bool
}

func (l *serviceLog) printf(format string, args ...any) {
	line := fmt.Sprintf("%s %s[%d]: %s\n", time.Now().UTC().Format(time.RFC3339), l.name, os.Getpid(), fmt.Sprintf(format, args...))
	_, _ = l.f.WriteString(line)
}

// once logs a message the first time its key comes up.
func (l *serviceLog) once(key, format string, args ...any) {
	if l.seen == nil {
		l.seen = map[string]bool{}
	}
	if !l.seen[key] {
		l.seen[key] = true
		l.printf(format, args...)
	}
}
