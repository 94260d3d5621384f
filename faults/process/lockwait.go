package process

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/labctl/labctl/faults"
	"github.com/labctl/labctl/internal/reexec"
	"github.com/labctl/labctl/labs"
)

const helperLockWait = "process-lock-wait"

// LockWaitParams configure process.lock-wait.
type LockWaitParams struct {
	Service string   `yaml:"service,omitempty" json:"service,omitempty" doc:"the service's name as ps shows it (comm and argv[0])" template:"true"`
	Args    []string `yaml:"args,omitempty" json:"args,omitempty" doc:"the service's arguments as ps shows them" template:"true"`
	Workers int      `yaml:"workers,omitempty" json:"workers,omitempty" doc:"worker threads that wait on the lock (default 4)"`
}

// Validate checks the params before anything runs.
func (p *LockWaitParams) Validate() error {
	if err := validateService(p.Service); err != nil {
		return err
	}
	if p.Workers < 1 || p.Workers > 64 {
		return &labs.ParamError{Field: "workers", Msg: "between 1 and 64"}
	}
	return nil
}

type lockWaitHelperParams struct {
	Comm    string `json:"comm"`
	Workers int    `json:"workers"`
}

type lockWaitKind struct{}

func init() {
	reexec.Register(helperLockWait, runLockWait)
	faults.Register(labs.FaultKind{
		Name: "process.lock-wait",
		Doc: "a multi-threaded server whose worker threads all wait in futex(2) on a lock held by a thread that " +
			"never releases it (it waits on a pipe nobody writes); the lock word holds the owner's TID",
		NewParams: func() any {
			return &LockWaitParams{Service: "api", Args: []string{"--threads", "4"}, Workers: 4}
		},
		Facts: []labs.FactSpec{
			{Name: "pid", Doc: "the server's PID as seen inside the host"},
			{Name: "machine_pid", Doc: "the server's PID as seen from the machine (for probes)"},
			{Name: "comm", Doc: "the server's command name"},
			{Name: "waiters", Doc: "how many threads wait on the lock"},
			{Name: "holder_tid", Doc: "TID (inside the host) of the thread that holds the lock"},
			{Name: "holder_machine_tid", Doc: "TID of the holder as seen from the machine"},
			{Name: "lock_addr", Doc: "address of the lock word, as strace prints it (0x...)"},
		},
		Inits: []labs.InitKind{labs.InitMini},
	}, lockWaitKind{})
}

func (lockWaitKind) Apply(ctx context.Context, env faults.Env, f *labs.Fault, params any) (*faults.Applied, error) {
	p := params.(*LockWaitParams)
	host, err := env.Host(f.Host)
	if err != nil {
		return nil, err
	}
	svc, err := startService(ctx, host, faults.ServiceSpec{Helper: helperLockWait, Comm: p.Service, Args: p.Args,
		Params: lockWaitHelperParams{Comm: p.Service, Workers: p.Workers}})
	if err != nil {
		return nil, err
	}
	applied := &faults.Applied{State: marshalState(newServiceState(svc.MachinePID))}
	addr, err := strconv.ParseUint(strings.TrimPrefix(svc.Extra["lock"], "0x"), 16, 64)
	if err != nil {
		return applied, fmt.Errorf("service %s reported no lock address: %w", p.Service, err)
	}
	holder, err := strconv.Atoi(svc.Extra["holder"])
	if err != nil {
		return applied, fmt.Errorf("service %s reported no holder: %w", p.Service, err)
	}
	var workers []int
	for _, s := range strings.Fields(svc.Extra["workers"]) {
		tid, err := strconv.Atoi(s)
		if err != nil {
			return applied, fmt.Errorf("service %s: bad worker tid %q", p.Service, s)
		}
		workers = append(workers, tid)
	}
	initPID := host.InitPID()
	holderM, err := machineTID(initPID, svc.MachinePID, holder)
	if err != nil {
		return applied, err
	}
	var workersM []int
	for _, tid := range workers {
		m, err := machineTID(initPID, svc.MachinePID, tid)
		if err != nil {
			return applied, err
		}
		workersM = append(workersM, m)
	}
	// Observable: every worker sits in futex(2) on the lock word, and
	// the holder in read(2).
	err = waitFor(ctx, p.Service+" threads blocked on the lock", func() (bool, error) {
		for _, tid := range workersM {
			ok, err := inSyscallAt(fmt.Sprintf("/proc/%d/task/%d/syscall", svc.MachinePID, tid), unix.SYS_FUTEX, int(addr))
			if !ok || err != nil {
				return false, err
			}
		}
		return inSyscallAt(fmt.Sprintf("/proc/%d/task/%d/syscall", svc.MachinePID, holderM), unix.SYS_READ, -1)
	})
	if err != nil {
		return applied, err
	}
	applied.Facts = map[string]string{
		"pid":                strconv.Itoa(svc.HostPID),
		"machine_pid":        strconv.Itoa(svc.MachinePID),
		"comm":               p.Service,
		"waiters":            strconv.Itoa(len(workers)),
		"holder_tid":         strconv.Itoa(holder),
		"holder_machine_tid": strconv.Itoa(holderM),
		"lock_addr":          fmt.Sprintf("%#x", addr),
	}
	return applied, nil
}

func (lockWaitKind) Revert(ctx context.Context, env faults.Env, f *labs.Fault, state json.RawMessage) error {
	return revertService(state)
}

// lockWord is the server's lock: 0 when free, else the owner's TID (as
// PI futexes and glibc's mutex owner field hold it). A package variable
// never moves, so its address is stable for futex(2).
var lockWord int32

// futexWait blocks the calling OS thread in the kernel while *addr == val.
// unix.Syscall6 (not RawSyscall) tells the Go scheduler the thread is in
// a syscall, so other goroutines keep running on other threads.
func futexWait(addr *int32, val int32) {
	const futexWaitPrivate = 0 | 128 // FUTEX_WAIT | FUTEX_PRIVATE_FLAG
	unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), futexWaitPrivate, uintptr(val), 0, 0, 0)
}

// lock takes lockWord as a C mutex would: try, else sleep in the kernel.
func lock(tid int32) {
	for {
		if atomic.CompareAndSwapInt32(&lockWord, 0, tid) {
			return
		}
		if owner := atomic.LoadInt32(&lockWord); owner != 0 {
			futexWait(&lockWord, owner)
		}
	}
}

// runLockWait is the deadlocked server: one thread takes the lock and
// then waits for a reply on a pipe that never comes; every worker thread
// waits for the lock. Each runs on its own locked OS thread, so the
// waits are real kernel waits that strace -f and /proc/PID/task show.
func runLockWait() int {
	var p lockWaitHelperParams
	if err := reexec.Params(&p); err != nil {
		return helperFail(err)
	}
	_ = reexec.SetComm(p.Comm)
	var pipe [2]int
	if err := unix.Pipe2(pipe[:], unix.O_CLOEXEC); err != nil {
		return helperFail(err)
	}
	holder := make(chan int32)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the process
		tid := int32(unix.Gettid())
		lock(tid)
		holder <- tid
		// "Wait for the flusher's answer" while holding the lock: the
		// write end is ours too, and nobody writes it.
		var b [1]byte
		for {
			unix.Read(pipe[0], b[:])
		}
	}()
	holderTID := <-holder
	tids := make(chan int32)
	for i := 0; i < p.Workers; i++ {
		go func() {
			runtime.LockOSThread()
			tid := int32(unix.Gettid())
			tids <- tid
			lock(tid)
			// Never reached while the holder lives.
			atomic.StoreInt32(&lockWord, 0)
		}()
	}
	var workers []string
	for i := 0; i < p.Workers; i++ {
		workers = append(workers, strconv.Itoa(int(<-tids)))
	}
	// The runtime started these threads after SetComm at the start; name
	// them all like the process, as a C server's threads would be.
	_ = reexec.SetComm(p.Comm)
	reportReady(map[string]string{
		"lock":    fmt.Sprintf("%#x", uintptr(unsafe.Pointer(&lockWord))),
		"holder":  strconv.Itoa(int(holderTID)),
		"workers": strings.Join(workers, " "),
	})
	blockForever()
	return 0
}
