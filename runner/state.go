// Package runner runs lab instances: it brings a lab's hosts, links and
// faults up, records every resource in a write-ahead ledger before it
// exists, keeps the instance's state under the state root, and tears
// everything down again on down or, after a crash, on gc.
package runner

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/labctl/labctl/labs"
	"github.com/labctl/labctl/runner/sandbox"
)

// DefaultStateRoot is where instances live unless LABCTL_STATE_DIR says otherwise.
const DefaultStateRoot = "/run/labctl"

// EnvStateDir overrides the state root (tests use a private one).
const EnvStateDir = "LABCTL_STATE_DIR"

// Instance phases.
const (
	PhaseCreating = "creating"
	PhaseReady    = "ready"
	PhaseFailed   = "failed"
	PhaseStopping = "stopping"
)

// Files of an instance directory.
const (
	labFile      = "lab.yaml"
	instanceFile = "instance.json"
	factsFile    = "facts.json"
	eventsFile   = "events.jsonl"
	ledgerFile   = "ledger"
	marksFile    = "marks.json"
	lockFile     = "lock"
	hostsDir     = "hosts"
)

// Instance is a running (or half-built, or crashed) lab.
type Instance struct {
	ID         string          `json:"id"`
	Name       string          `json:"name"`
	LabName    string          `json:"lab"`
	LabFile    string          `json:"lab_file,omitempty"`
	Seed       int64           `json:"seed"`
	Created    time.Time       `json:"created"`
	Phase      string          `json:"phase"`
	Owner      Owner           `json:"owner"`
	Hosts      []*sandbox.Host `json:"hosts"`
	Addresses  []LinkAddress   `json:"addresses,omitempty"`
	AddrBlock  int             `json:"addr_block,omitempty"`
	Lab        *labs.Lab       `json:"-"`
	Dir        string          `json:"-"`
	facts      map[string]string
	ledger     *ledger
	lock       *os.File
	progress   func(string)
	loadFailed error // why lab.yaml could not be parsed (gc still tears down)
}

// Owner is the process that created the instance; StartTime guards
// against PID reuse.
type Owner struct {
	PID       int    `json:"pid"`
	StartTime uint64 `json:"start_time"`
}

// LinkAddress is one end of a link: host, interface and address.
type LinkAddress struct {
	Link   int    `json:"link"`
	Host   string `json:"host"`
	Peer   string `json:"peer"`
	IfName string `json:"ifname"`
	CIDR   string `json:"cidr"` // address with prefix length, e.g. 10.7.0.1/24
}

// StateRoot is the directory holding every instance.
func StateRoot() string {
	if d := os.Getenv(EnvStateDir); d != "" {
		return d
	}
	return DefaultStateRoot
}

// idAlphabet is lowercase RFC 4648 base32: ids are safe in interface,
// netns and cgroup names.
const idAlphabet = "abcdefghijklmnopqrstuvwxyz234567"

func newID() string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	for i := range b {
		b[i] = idAlphabet[int(b[i])%32]
	}
	return string(b[:])
}

func validID(s string) bool {
	if len(s) != 6 {
		return false
	}
	for _, c := range s {
		if !strings.ContainsRune(idAlphabet, c) {
			return false
		}
	}
	return true
}

// ensureRoot creates the state root, private to root.
func ensureRoot() (string, error) {
	root := StateRoot()
	if err := os.MkdirAll(root, 0o700); err != nil {
		return "", fmt.Errorf("create state root %s: %w", root, err)
	}
	return root, nil
}

// lockPath locks a file exclusively (blocking) and returns it; closing
// the file releases the lock.
func lockPath(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := flockExclusive(f, false); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}

// tryLockPath is lockPath without waiting: ok is false when someone
// else holds the lock.
func tryLockPath(path string) (f *os.File, ok bool, err error) {
	f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, false, err
	}
	if err := flockExclusive(f, true); err != nil {
		f.Close()
		if errors.Is(err, errWouldBlock) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, true, nil
}

// withRootLock serialises the few root-wide decisions: creating an
// instance directory, naming, address blocks, and gc's scan.
func withRootLock(fn func(root string) error) error {
	root, err := ensureRoot()
	if err != nil {
		return err
	}
	l, err := lockPath(filepath.Join(root, ".lock"))
	if err != nil {
		return err
	}
	defer l.Close()
	return fn(root)
}

// writeFileAtomic replaces path so readers never see half a file.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(data, '\n'))
}

// save writes instance.json.
func (in *Instance) save() error {
	if err := writeJSON(filepath.Join(in.Dir, instanceFile), in); err != nil {
		return fmt.Errorf("save instance %s: %w", in.ID, err)
	}
	return nil
}

func (in *Instance) saveFacts() error {
	if err := writeJSON(filepath.Join(in.Dir, factsFile), in.facts); err != nil {
		return fmt.Errorf("save facts of %s: %w", in.ID, err)
	}
	return nil
}

func (in *Instance) setPhase(phase string) error {
	in.Phase = phase
	return in.save()
}

// loadInstance reads an instance directory. It tolerates a lab.yaml that
// no longer parses (loadFailed) so gc can still tear the instance down.
func loadInstance(dir string) (*Instance, error) {
	data, err := os.ReadFile(filepath.Join(dir, instanceFile))
	if err != nil {
		return nil, err
	}
	in := &Instance{}
	if err := json.Unmarshal(data, in); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, instanceFile), err)
	}
	in.Dir = dir
	in.facts = map[string]string{}
	if data, err := os.ReadFile(filepath.Join(dir, factsFile)); err == nil {
		_ = json.Unmarshal(data, &in.facts) // facts are rebuilt data; a torn file only loses templates
	}
	in.Lab, in.loadFailed = loadLabSource(filepath.Join(dir, labFile), in.LabFile)
	return in, nil
}

// instanceDirs lists the directories of the state root that look like instances.
func instanceDirs(root string) ([]string, error) {
	ents, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && validID(e.Name()) {
			out = append(out, filepath.Join(root, e.Name()))
		}
	}
	return out, nil
}

// List returns the instances under the state root (any phase), oldest first.
func List() ([]*Instance, error) {
	dirs, err := instanceDirs(StateRoot())
	if err != nil {
		return nil, err
	}
	var out []*Instance
	for _, d := range dirs {
		in, err := loadInstance(d)
		if err != nil {
			continue // being created or removed right now
		}
		out = append(out, in)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// Open finds an instance by id or name; "" means the only one there is.
func Open(ref string) (*Instance, error) {
	all, err := List()
	if err != nil {
		return nil, err
	}
	if ref == "" {
		switch len(all) {
		case 0:
			return nil, errors.New("no lab is running")
		case 1:
			return all[0], nil
		}
		var names []string
		for _, in := range all {
			names = append(names, in.Name+" ("+in.ID+")")
		}
		return nil, fmt.Errorf("several labs are running, name one: %s", strings.Join(names, ", "))
	}
	for _, in := range all {
		if in.ID == ref || in.Name == ref {
			return in, nil
		}
	}
	return nil, fmt.Errorf("no running lab is called %q (labctl status lists them)", ref)
}

// Facts returns a copy of the instance's facts.
func (in *Instance) Facts() map[string]string {
	out := make(map[string]string, len(in.facts))
	for k, v := range in.facts {
		out[k] = v
	}
	return out
}

// HostNames returns the hosts' names in lab order.
func (in *Instance) HostNames() []string {
	var out []string
	for _, h := range in.Hosts {
		out = append(out, h.Name)
	}
	return out
}

func (in *Instance) host(name string) (*sandbox.Host, error) {
	if name == "" && len(in.Hosts) == 1 {
		return in.Hosts[0], nil
	}
	for _, h := range in.Hosts {
		if h.Name == name {
			return h, nil
		}
	}
	return nil, fmt.Errorf("lab %s has no host %q (hosts: %s)", in.LabName, name, strings.Join(in.HostNames(), ", "))
}

func (in *Instance) logf(format string, args ...any) {
	if in.progress != nil {
		in.progress(fmt.Sprintf(format, args...))
	}
}
