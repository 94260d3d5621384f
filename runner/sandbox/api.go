// Package sandbox creates and destroys lab hosts: throwaway "machines" made of
// fresh pid, mount, uts, ipc, net and cgroup namespaces, their own cgroup(s)
// with limits, and a PID 1 that is labctl re-exec'd as a small init.
//
// The runner builds instances on top of it: it records every resource in its
// write-ahead ledger through the Recorder before Start creates it, and calls
// Release in reverse ledger order on down and gc.
package sandbox

import "os"

// Layout is the cgroup layout of the machine.
type Layout int

const (
	// CgroupV1 is a legacy or hybrid layout: the controllers labctl uses are
	// v1 hierarchies under /sys/fs/cgroup/<controller>.
	CgroupV1 Layout = iota + 1
	// CgroupV2 is the unified layout: one cgroup2 hierarchy at /sys/fs/cgroup.
	CgroupV2
)

func (l Layout) String() string {
	switch l {
	case CgroupV1:
		return "cgroup1"
	case CgroupV2:
		return "cgroup2"
	}
	return "unknown"
}

// SupportError says why this process cannot run hosts and what to do.
type SupportError struct {
	Msg  string // what is missing
	Hint string // what to do about it
}

func (e *SupportError) Error() string {
	if e.Hint == "" {
		return e.Msg
	}
	return e.Msg + " (" + e.Hint + ")"
}

// Spec describes one host to start.
type Spec struct {
	Instance   string  // instance id, e.g. "a1b2c3"
	Lab        string  // lab name (shown in the init's argv)
	Name       string  // host name in the lab file (<= 12 chars)
	Hostname   string  // the host's UTS hostname
	Memory     int64   // bytes, > 0
	Pids       int64   // > 0
	CPU        float64 // cores; 0 = unlimited
	StateDir   string  // machine-side dir owned by this host, already created by the caller
	ResolvConf []byte  // content of the host's /etc/resolv.conf
	EtcHosts   []byte  // content of the host's /etc/hosts
	Files      []File  // declared files placed in the host's private view
	NetNSName  string  // named netns to create, e.g. "labctl-<id>-<host>"
	Mounts     []Mount // lab-local filesystems mounted inside the host only (see AddMount)
	Users      []User  // lab-local accounts, in the host's own /etc/passwd and /etc/shadow (users.go)
	Groups     []Group // lab-local groups, in the host's own /etc/group (users.go)
	Init       string  // "" (labctl's init) or InitSystemd: boot systemd under systemd-nspawn (systemd_linux.go)
}

// File is a declared file in a host's private view.
type File struct {
	Path    string // absolute path inside the host
	Content []byte
	Mode    os.FileMode
	UID     int
	GID     int
}

// Resource kinds passed to a Recorder and back to Release.
const (
	KindCgroup  = "cgroup"
	KindNetNS   = "netns"
	KindProcess = "process"
	KindMount   = "mount"
	KindDir     = "dir"
)

// Recorder is called BEFORE each resource is created; the caller appends it to
// its write-ahead ledger (and syncs). data is JSON-serialisable and enough for
// Release to remove the resource after a crash of labctl.
type Recorder func(kind, name string, data any) error

// Host is a running host. It is JSON-serialisable: the caller keeps it in the
// instance state.
type Host struct {
	Name          string            `json:"name"`
	InitPID       int               `json:"init_pid"`
	InitStartTime uint64            `json:"init_start_time"` // /proc/PID/stat field 22, guards against PID reuse
	NetNS         string            `json:"netns"`           // /run/netns/<NetNSName>
	Cgroups       map[string]string `json:"cgroups"`         // controller -> machine-side dir; on v2 key "unified"
	Layout        Layout            `json:"layout"`
	Init          string            `json:"init,omitempty"` // Spec.Init it was started with
}
