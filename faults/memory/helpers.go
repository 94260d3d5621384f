package memory

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/labctl/labctl/internal/reexec"
	"github.com/labctl/labctl/labs"
)

// The processes these faults start inside a host are labctl re-exec'd as
// two helpers: a supervisor that keeps a service running and restarts it
// with a backoff (what runsv or systemd's Restart= do), and the service
// itself, a worker whose memory behaviour comes from its config file in
// the host, where the learner can read and change it.
const (
	helperSupervisor = "memory.supervisor"
	helperWorker     = "memory.worker"
)

func init() {
	reexec.Register(helperSupervisor, runSupervisor)
	reexec.Register(helperWorker, runWorker)
}

// serviceName is the name this helper runs under: argv[0] when the caller
// set it to the service's name, otherwise fallback (argv[0] is then the
// path of the labctl binary).
func serviceName(fallback string) string {
	name := filepath.Base(os.Args[0])
	if exe, err := os.Executable(); (err == nil && name == filepath.Base(exe)) || name == "" || name == "." || name == "/" {
		return fallback
	}
	return name
}

// killedBy is how the supervisor logs an exit by a signal; the tests
// count these lines.
const killedBy = "killed by signal"

// runSupervisor: supervisor [--restart D] [--max-restart D] [--log-dir DIR] -- NAME ARGS...
// starts NAME (the worker helper with argv[0] NAME) and restarts it when
// it exits, waiting restart, doubling after every quick failure up to
// max-restart, as service managers do.
func runSupervisor() int {
	_ = reexec.SetComm(serviceName("supervisor"))
	fs := flag.NewFlagSet("supervisor", flag.ContinueOnError)
	restart := fs.Duration("restart", time.Second, "delay before a restart")
	maxRestart := fs.Duration("max-restart", 8*time.Second, "longest delay between restarts")
	logDir := fs.String("log-dir", "/var/log/worker", "where the logs go")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	argv := fs.Args()
	if len(argv) == 0 {
		fmt.Fprintln(os.Stderr, "supervisor: no service to run")
		return 2
	}
	if err := os.MkdirAll(*logDir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "supervisor:", err)
		return 1
	}
	// Start from empty logs: a host is a fresh machine, and the lab's
	// checks and tests count what this supervisor logs.
	logf, err := os.OpenFile(filepath.Join(*logDir, "supervisor.log"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, "supervisor:", err)
		return 1
	}
	logLine := func(format string, args ...any) {
		fmt.Fprintf(logf, "%s %s\n", time.Now().UTC().Format(time.RFC3339), fmt.Sprintf(format, args...))
	}
	// /proc/self/exe re-executes this very binary even where its path is
	// not visible inside the host (a binary under the machine's /tmp).
	exe := "/proc/self/exe"
	// Stop the service with the supervisor, as a service manager does.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	delay := *restart
	name := argv[0]
	if err := os.Truncate(filepath.Join(*logDir, name+".log"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
		logLine("cannot truncate the %s log: %v", name, err)
	}
	for {
		out, err := os.OpenFile(filepath.Join(*logDir, name+".log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			logLine("cannot open the %s log: %v", name, err)
			return 1
		}
		cmd := exec.Command(exe, argv[1:]...)
		cmd.Args = argv
		cmd.Env = []string{reexec.EnvHelper + "=" + helperWorker, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}
		cmd.Stdout, cmd.Stderr = out, out
		cmd.Dir = "/"
		started := time.Now()
		if err := cmd.Start(); err != nil {
			logLine("cannot start %s: %v", name, err)
			out.Close()
			return 1
		}
		out.Close()
		logLine("started %s (pid %d)", name, cmd.Process.Pid)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case s := <-stop:
			_ = cmd.Process.Signal(s)
			<-done
			logLine("stopped %s", name)
			return 0
		case err = <-done:
		}
		var ee *exec.ExitError
		switch {
		case errors.As(err, &ee):
			ws := ee.Sys().(syscall.WaitStatus)
			if ws.Signaled() {
				logLine("%s (pid %d) %s %s", name, cmd.Process.Pid, killedBy, signalName(ws.Signal()))
			} else {
				logLine("%s (pid %d) exited with status %d", name, cmd.Process.Pid, ws.ExitStatus())
			}
		case err != nil:
			logLine("%s (pid %d): %v", name, cmd.Process.Pid, err)
		default:
			logLine("%s (pid %d) exited with status 0", name, cmd.Process.Pid)
		}
		// A service that ran for a while earns a fresh backoff.
		if time.Since(started) > 4**maxRestart {
			delay = *restart
		}
		logLine("restarting %s in %s", name, delay)
		select {
		case <-stop:
			return 0
		case <-time.After(delay):
		}
		delay = min(2*delay, *maxRestart)
	}
}

func signalName(s syscall.Signal) string {
	switch s {
	case syscall.SIGKILL:
		return "SIGKILL"
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGSEGV:
		return "SIGSEGV"
	}
	return fmt.Sprintf("signal %d", int(s))
}

// workerConfig is /etc/worker.conf: "key = value" lines, # comments.
type workerConfig struct {
	Buffer       labs.Size     // allocated and touched at start
	Reserve      labs.Size     // address space mapped at start and never touched
	LeakPerSec   labs.Size     // then this much more every second ...
	LeakMax      labs.Size     // ... until the leak reaches this (0: no end)
	CPUPerSecond labs.Duration // CPU time spent every second, in ten bursts
	OOMScoreAdj  int           // written to /proc/self/oom_score_adj at start
	Read         string        // a file read at start and every 5 s (its pages stay in the page cache)
}

func parseWorkerConfig(r io.Reader) (workerConfig, error) {
	var c workerConfig
	sizes := map[string]*labs.Size{"buffer": &c.Buffer, "reserve": &c.Reserve, "leak_per_second": &c.LeakPerSec, "leak_max": &c.LeakMax}
	durations := map[string]*labs.Duration{"cpu_per_second": &c.CPUPerSecond}
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		text, _, _ := strings.Cut(sc.Text(), "#")
		text = strings.TrimSpace(text)
		if text == "" {
			continue
		}
		key, val, ok := strings.Cut(text, "=")
		if !ok {
			return c, fmt.Errorf("line %d: want key = value", line)
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		if dst, ok := sizes[key]; ok {
			v, err := labs.ParseSize(val)
			if err != nil {
				return c, fmt.Errorf("line %d: %s: %w", line, key, err)
			}
			*dst = v
			continue
		}
		if dst, ok := durations[key]; ok {
			v, err := labs.ParseDuration(val)
			if err != nil {
				return c, fmt.Errorf("line %d: %s: %w", line, key, err)
			}
			*dst = v
			continue
		}
		if key == "read" {
			c.Read = val
			continue
		}
		if key == "oom_score_adj" {
			v, err := strconv.Atoi(val)
			if err != nil || v < -1000 || v > 1000 {
				return c, fmt.Errorf("line %d: oom_score_adj: %q is not a number from -1000 to 1000", line, val)
			}
			c.OOMScoreAdj = v
			continue
		}
		return c, fmt.Errorf("line %d: unknown setting %q", line, key)
	}
	return c, sc.Err()
}

// pageSize is the granularity at which touching memory makes it resident.
var pageSize = os.Getpagesize()

// chunk is the unit the worker allocates in, so its RSS grows smoothly.
const chunk = 1 << 20

// allocate returns n bytes (rounded up to chunks) whose every page was
// written, so they are resident and charged to the cgroup.
func allocate(n int64) [][]byte {
	var out [][]byte
	for n > 0 {
		b := make([]byte, chunk)
		for i := 0; i < len(b); i += pageSize {
			b[i] = 1
		}
		out = append(out, b)
		n -= chunk
	}
	return out
}

// runWorker: worker --config FILE. Allocates the configured buffer, then
// leaks as configured, and otherwise idles like a service waiting for work.
func runWorker() int {
	name := serviceName("worker")
	_ = reexec.SetComm(name)
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	config := fs.String("config", "/etc/"+name+".conf", "configuration file")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "%s %s[%d]: %s\n", time.Now().UTC().Format(time.RFC3339), name, os.Getpid(), fmt.Sprintf(format, args...))
	}
	f, err := os.Open(*config)
	if err != nil {
		logf("%v", err)
		return 1
	}
	cfg, err := parseWorkerConfig(f)
	f.Close()
	if err != nil {
		logf("%s: %v", *config, err)
		return 1
	}
	if cfg.OOMScoreAdj != 0 {
		// As systemd's OOMScoreAdjust=: set by the service's own config.
		if err := os.WriteFile("/proc/self/oom_score_adj", []byte(strconv.Itoa(cfg.OOMScoreAdj)), 0); err != nil {
			logf("oom_score_adj %d: %v", cfg.OOMScoreAdj, err)
			return 1
		}
	}
	if cfg.Reserve > 0 {
		// Address space only: mapped, never written, so it counts in VSZ
		// and not in RSS (nor in the cgroup's usage).
		m, err := syscall.Mmap(-1, 0, int(cfg.Reserve), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANONYMOUS|syscall.MAP_NORESERVE)
		if err != nil {
			logf("reserve %s: %v", cfg.Reserve, err)
			return 1
		}
		reserved = m
		logf("reserved %s of address space for the index", cfg.Reserve)
	}
	if cfg.Buffer > 0 {
		logf("allocating a batch buffer of %s", cfg.Buffer)
		retained = allocate(int64(cfg.Buffer))
	}
	if cfg.Read != "" {
		if err := readAll(cfg.Read); err != nil {
			logf("%v", err)
			return 1
		}
		logf("read %s", cfg.Read)
	}
	logf("ready: batch buffer of %s in memory", cfg.Buffer)
	var leaked int64
	tick := time.NewTicker(time.Second / 10)
	defer tick.Stop()
	for n := 1; ; n++ {
		<-tick.C
		if cfg.CPUPerSecond > 0 {
			spin(cfg.CPUPerSecond.D() / 10)
		}
		if n%50 == 0 && cfg.Read != "" {
			_ = readAll(cfg.Read)
		}
		if n%10 == 0 && cfg.LeakPerSec > 0 && (cfg.LeakMax == 0 || leaked < int64(cfg.LeakMax)) {
			retained = append(retained, allocate(int64(cfg.LeakPerSec))...)
			leaked += int64(cfg.LeakPerSec)
		}
	}
}

// readAll reads a file through the page cache and discards the data.
func readAll(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(io.Discard, f)
	return err
}

// spin burns d of CPU time (not wall time: under a quota, the wall time
// it takes is the symptom). The worker does nothing else meanwhile, so
// the process's CPU clock is this loop's.
func spin(d time.Duration) {
	start := processCPU()
	for x := uint64(1); processCPU()-start < d; x = x*6364136223846793005 + 1 {
		for i := 0; i < 1000; i++ {
			x ^= x >> 7
		}
	}
}

func processCPU() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_PROCESS_CPUTIME_ID, &ts)
	return time.Duration(ts.Nano())
}

// reserved keeps the untouched mapping alive.
var reserved []byte

// retained keeps the worker's memory reachable, so the garbage collector
// never gives it back: the point is that it stays resident.
var retained [][]byte
