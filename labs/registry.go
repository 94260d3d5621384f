package labs

import (
	"fmt"
	"sort"
	"sync"
)

// The registry holds the fault and probe kinds the loader accepts. The
// faults and checks packages fill it from their init functions, so a new
// kind never touches the loader.

// FaultKind describes a fault kind for the loader and the schema.
type FaultKind struct {
	Name string
	Doc  string
	// NewParams returns a pointer to a fresh params struct, with defaults
	// already set. The `with:` mapping is decoded strictly into it.
	NewParams func() any
	// Facts are the facts the kind exports, referenced as "<fault id>.<name>".
	Facts []FactSpec
	// Inits lists the host init kinds it supports (empty: any).
	Inits []InitKind
}

// FactSpec names and describes one exported fact.
type FactSpec struct {
	Name string
	Doc  string
}

// ProbeKind describes a state-probe kind for the loader and the schema.
type ProbeKind struct {
	Name string
	Doc  string
	// NewParams returns a pointer to a fresh params struct with defaults.
	// The probe mapping's keys other than kind and host are decoded into it.
	NewParams func() any
	// NoHost is set for probes that do not run against a host.
	NoHost bool
}

// ParamValidator is implemented by params structs that check more than
// their types. Return a *ParamError to point at one field.
type ParamValidator interface {
	Validate() error
}

// HostParamValidator is implemented by params that must agree with the
// host they run on (e.g. a path that must lie on a filesystem the host
// declares). It runs once the params' own Validate has passed; return a
// *ParamError to point at one field.
type HostParamValidator interface {
	ValidateHost(h *Host) error
}

// ParamError is a validation error about one field of a params struct
// (Field is the YAML key), so the loader can give that field's position.
type ParamError struct {
	Field string
	Msg   string
}

func (e *ParamError) Error() string { return e.Field + ": " + e.Msg }

var (
	regMu      sync.RWMutex
	faultKinds = map[string]FaultKind{}
	probeKinds = map[string]ProbeKind{}
)

// RegisterFault adds a fault kind. It panics on a duplicate name: two
// drivers claiming one kind is a programming error.
func RegisterFault(k FaultKind) {
	regMu.Lock()
	defer regMu.Unlock()
	if _, dup := faultKinds[k.Name]; dup {
		panic(fmt.Sprintf("labs: fault kind %q registered twice", k.Name))
	}
	faultKinds[k.Name] = k
}

// RegisterProbe adds a probe kind. It panics on a duplicate name.
func RegisterProbe(k ProbeKind) {
	regMu.Lock()
	defer regMu.Unlock()
	if _, dup := probeKinds[k.Name]; dup {
		panic(fmt.Sprintf("labs: probe kind %q registered twice", k.Name))
	}
	probeKinds[k.Name] = k
}

// LookupFault returns the fault kind of that name.
func LookupFault(name string) (FaultKind, bool) {
	regMu.RLock()
	defer regMu.RUnlock()
	k, ok := faultKinds[name]
	return k, ok
}

// LookupProbe returns the probe kind of that name.
func LookupProbe(name string) (ProbeKind, bool) {
	regMu.RLock()
	defer regMu.RUnlock()
	k, ok := probeKinds[name]
	return k, ok
}

// FaultKinds returns every registered fault kind, sorted by name.
func FaultKinds() []FaultKind {
	regMu.RLock()
	defer regMu.RUnlock()
	out := make([]FaultKind, 0, len(faultKinds))
	for _, k := range faultKinds {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// ProbeKinds returns every registered probe kind, sorted by name.
func ProbeKinds() []ProbeKind {
	regMu.RLock()
	defer regMu.RUnlock()
	out := make([]ProbeKind, 0, len(probeKinds))
	for _, k := range probeKinds {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
