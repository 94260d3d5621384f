package process

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/labctl/labctl/faults"
	"github.com/labctl/labctl/internal/reexec"
	"github.com/labctl/labctl/labs"
)

const helperIgnoreSignal = "process-ignore-signal"

// IgnoreSignalParams configure process.ignore-signal.
type IgnoreSignalParams struct {
	Service string   `yaml:"service,omitempty" json:"service,omitempty" doc:"the service's name as ps shows it (comm and argv[0])" template:"true"`
	Args    []string `yaml:"args,omitempty" json:"args,omitempty" doc:"the service's arguments as ps shows them" template:"true"`
	Signals []string `yaml:"signals,omitempty" json:"signals,omitempty" doc:"signals the service does not die of: TERM, INT, HUP, QUIT, USR1, USR2 (default [TERM])"`
	How     string   `yaml:"how,omitempty" json:"how,omitempty" doc:"ignore: SIG_IGN (shows in SigIgn); swallow: a handler that does nothing (SigCgt) (default ignore)"`
}

var signalsByName = map[string]unix.Signal{
	"TERM": unix.SIGTERM, "INT": unix.SIGINT, "HUP": unix.SIGHUP,
	"QUIT": unix.SIGQUIT, "USR1": unix.SIGUSR1, "USR2": unix.SIGUSR2,
}

// Validate checks the params before anything runs.
func (p *IgnoreSignalParams) Validate() error {
	if err := validateService(p.Service); err != nil {
		return err
	}
	if len(p.Signals) == 0 {
		return &labs.ParamError{Field: "signals", Msg: "name at least one signal"}
	}
	for _, s := range p.Signals {
		if _, ok := signalsByName[strings.TrimPrefix(strings.ToUpper(s), "SIG")]; !ok {
			return &labs.ParamError{Field: "signals", Msg: fmt.Sprintf("unknown signal %q; one of TERM, INT, HUP, QUIT, USR1, USR2", s)}
		}
	}
	if p.How != "ignore" && p.How != "swallow" {
		return &labs.ParamError{Field: "how", Msg: "ignore or swallow"}
	}
	return nil
}

func (p *IgnoreSignalParams) signals() []unix.Signal {
	var out []unix.Signal
	for _, s := range p.Signals {
		out = append(out, signalsByName[strings.TrimPrefix(strings.ToUpper(s), "SIG")])
	}
	return out
}

type ignoreSignalHelperParams struct {
	Comm    string `json:"comm"`
	Signals []int  `json:"signals"`
	How     string `json:"how"`
}

type ignoreSignalKind struct{}

func init() {
	reexec.Register(helperIgnoreSignal, runIgnoreSignal)
	faults.Register(labs.FaultKind{
		Name: "process.ignore-signal",
		Doc:  "a service ignores or swallows SIGTERM (and optionally other signals): kill PID does nothing; /proc/PID/status SigIgn/SigCgt show why",
		NewParams: func() any {
			return &IgnoreSignalParams{Service: "api", Args: []string{"--listen", ":8080"}, Signals: []string{"TERM"}, How: "ignore"}
		},
		Facts: []labs.FactSpec{
			{Name: "pid", Doc: "the service's PID as seen inside the host"},
			{Name: "machine_pid", Doc: "the service's PID as seen from the machine (for probes)"},
			{Name: "comm", Doc: "the service's command name"},
			{Name: "mask_field", Doc: "the /proc/PID/status line that shows the disposition: SigIgn or SigCgt"},
			{Name: "mask", Doc: "that line's value (hex mask) after the fault"},
		},
		Inits: []labs.InitKind{labs.InitMini},
	}, ignoreSignalKind{})
}

// signalMask is the /proc/PID/status bit mask of a set of signals.
func signalMask(sigs []unix.Signal) uint64 {
	var m uint64
	for _, s := range sigs {
		m |= 1 << (uint(s) - 1)
	}
	return m
}

func (ignoreSignalKind) Apply(ctx context.Context, env faults.Env, f *labs.Fault, params any) (*faults.Applied, error) {
	p := params.(*IgnoreSignalParams)
	host, err := env.Host(f.Host)
	if err != nil {
		return nil, err
	}
	hp := ignoreSignalHelperParams{Comm: p.Service, How: p.How}
	for _, s := range p.signals() {
		hp.Signals = append(hp.Signals, int(s))
	}
	svc, err := startService(ctx, host, faults.ServiceSpec{Helper: helperIgnoreSignal, Comm: p.Service, Args: p.Args, Params: hp})
	if err != nil {
		return nil, err
	}
	applied := &faults.Applied{State: marshalState(newServiceState(svc.MachinePID))}
	field := "SigIgn"
	if p.How == "swallow" {
		field = "SigCgt"
	}
	want := signalMask(p.signals())
	var mask string
	status := fmt.Sprintf("/proc/%d/status", svc.MachinePID)
	err = waitFor(ctx, field+" of "+p.Service, func() (bool, error) {
		v, err := statusField(status, field)
		if err != nil {
			return false, err
		}
		m, err := strconv.ParseUint(v, 16, 64)
		mask = v
		return err == nil && m&want == want, err
	})
	if err != nil {
		return applied, err
	}
	applied.Facts = map[string]string{
		"pid":         strconv.Itoa(svc.HostPID),
		"machine_pid": strconv.Itoa(svc.MachinePID),
		"comm":        p.Service,
		"mask_field":  field,
		"mask":        mask,
	}
	return applied, nil
}

func (ignoreSignalKind) Revert(ctx context.Context, env faults.Env, f *labs.Fault, state json.RawMessage) error {
	return revertService(state)
}

// runIgnoreSignal is the service that will not stop politely.
func runIgnoreSignal() int {
	var p ignoreSignalHelperParams
	if err := reexec.Params(&p); err != nil {
		return helperFail(err)
	}
	_ = reexec.SetComm(p.Comm)
	var sigs []os.Signal
	for _, s := range p.Signals {
		sigs = append(sigs, unix.Signal(s))
	}
	if p.How == "swallow" {
		// A handler that logs and carries on, as a service that "handles"
		// SIGTERM by reloading would.
		ch := make(chan os.Signal, 16)
		signal.Notify(ch, sigs...)
		go func() {
			for range ch {
			}
		}()
	} else {
		signal.Ignore(sigs...)
	}
	reportReady(nil)
	blockForever()
	return 0
}
