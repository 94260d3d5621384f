package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
)

// A fault that creates something the host's death does not remove (a
// loop device, a frozen filesystem, a FUSE connection) records it with
// Env.Record under a resource kind of its own, registered here with the
// function that releases it. Teardown and gc call that function from the
// ledger alone, so it must work after a crash: idempotent, already gone
// is success.

// ReleaseFunc removes one recorded resource.
type ReleaseFunc func(ctx context.Context, name string, data json.RawMessage) error

var (
	resMu     sync.RWMutex
	releasers = map[string]ReleaseFunc{}
)

// RegisterResource adds a resource kind, e.g. "dstate.freeze". Kind names
// must contain a dot, so they never collide with the sandbox's kinds.
func RegisterResource(kind string, release ReleaseFunc) {
	resMu.Lock()
	defer resMu.Unlock()
	if _, dup := releasers[kind]; dup {
		panic(fmt.Sprintf("faults: resource kind %q registered twice", kind))
	}
	releasers[kind] = release
}

// Releaser returns the release function of a resource kind.
func Releaser(kind string) (ReleaseFunc, bool) {
	resMu.RLock()
	defer resMu.RUnlock()
	r, ok := releasers[kind]
	return r, ok
}
