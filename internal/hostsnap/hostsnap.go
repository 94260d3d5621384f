// Package hostsnap takes a snapshot of the machine state a lab could leak
// into: named network namespaces, the machine's own links, addresses and
// routes, the mount table, labctl cgroups, labctl processes, loop devices,
// systemd-nspawn's per-machine state under /run and the few /etc files a
// lab must never touch. Privileged tests take one before and one after and
// require them to be equal (cmp.Diff).
package hostsnap

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
)

// Snapshot is comparable with cmp.Diff: only exported, ordered fields,
// nothing volatile (no counters, no mount ids).
type Snapshot struct {
	NetNS   []string          // /run/netns entries and nsfs mount points
	Links   []Link            // the machine's network namespace
	Addrs   []string          // "<link> <cidr>"
	Routes  []string          // "<table> <dst> via <gw> dev <link> proto <p> scope <s> type <t>"
	Mounts  []Mount           // the mount table of this process's mount namespace
	Cgroups []string          // "<hierarchy>:<dir>" for every non-empty dir under /labctl
	Procs   []Proc            // processes that belong to labctl
	Loops   []string          // "<loopN> <backing file>"
	Files   map[string]string // path -> sha256 of the /etc files labs must not change
	// Nspawn lists what systemd-nspawn keeps per machine under
	// /run/systemd/nspawn ("propagate/<machine>/", "locks/<file>"): a
	// killed nspawn leaves it behind.
	Nspawn []string
	// Nftables is the machine's ruleset (nft list ruleset), "" without nft.
	Nftables string
}

// Link is one network interface of the machine's namespace.
type Link struct {
	Name   string
	Type   string
	MTU    int
	Flags  string
	Master int
}

// Mount is one line of /proc/self/mountinfo without its ids.
type Mount struct {
	Point  string
	FSType string
	Source string
}

// Proc is a process tagged as labctl's, with why it is tagged.
type Proc struct {
	PID    int
	Comm   string
	Exe    string
	Cgroup string
	Why    string
}

// watchedFiles are machine files a lab must leave byte-for-byte unchanged.
var watchedFiles = []string{"/etc/resolv.conf", "/etc/hosts", "/etc/passwd", "/etc/group"}

// Take records the machine's current state.
func Take() (*Snapshot, error) {
	s := &Snapshot{}
	steps := []struct {
		what string
		fn   func(*Snapshot) error
	}{
		{"mounts", takeMounts},
		{"netns", takeNetNS},
		{"network", takeNetwork},
		{"cgroups", takeCgroups},
		{"processes", takeProcs},
		{"loop devices", takeLoops},
		{"nspawn state", takeNspawn},
		{"files", takeFiles},
		{"nftables", takeNftables},
	}
	for _, st := range steps {
		if err := st.fn(s); err != nil {
			return nil, fmt.Errorf("hostsnap: %s: %w", st.what, err)
		}
	}
	return s, nil
}

// Diff returns "" when a and b are equal, else a readable difference.
func Diff(a, b *Snapshot) string { return cmp.Diff(a, b) }

func takeMounts(s *Snapshot) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m, ok := parseMountinfo(sc.Text())
		if !ok {
			continue
		}
		s.Mounts = append(s.Mounts, m)
		if m.FSType == "nsfs" {
			s.NetNS = append(s.NetNS, "mount:"+m.Point)
		}
	}
	sort.Slice(s.Mounts, func(i, j int) bool {
		a, b := s.Mounts[i], s.Mounts[j]
		if a.Point != b.Point {
			return a.Point < b.Point
		}
		if a.FSType != b.FSType {
			return a.FSType < b.FSType
		}
		return a.Source < b.Source
	})
	return sc.Err()
}

// parseMountinfo reads "id parent maj:min root point opts [optional...] - fstype source superopts".
func parseMountinfo(line string) (Mount, bool) {
	fields := strings.Fields(line)
	sep := -1
	for i, f := range fields {
		if f == "-" {
			sep = i
			break
		}
	}
	if sep < 5 || len(fields) < sep+3 {
		return Mount{}, false
	}
	return Mount{Point: unescapeOctal(fields[4]), FSType: fields[sep+1], Source: unescapeOctal(fields[sep+2])}, true
}

// unescapeOctal undoes the kernel's \040-style escaping in mountinfo.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func takeNetNS(s *Snapshot) error {
	ents, err := os.ReadDir("/run/netns")
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for _, e := range ents {
		s.NetNS = append(s.NetNS, "named:"+e.Name())
	}
	// The directory itself (and labctl's staging names for it) is residue
	// too when a lab made it and left it behind.
	if err == nil {
		s.NetNS = append(s.NetNS, "dir:/run/netns")
	}
	staging, _ := filepath.Glob("/run/netns.labctl-*")
	for _, p := range staging {
		s.NetNS = append(s.NetNS, "dir:"+p)
	}
	sort.Strings(s.NetNS)
	return nil
}

func takeNetwork(s *Snapshot) error {
	links, err := netlink.LinkList()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	names := map[int]string{}
	for _, l := range links {
		a := l.Attrs()
		names[a.Index] = a.Name
		s.Links = append(s.Links, Link{Name: a.Name, Type: l.Type(), MTU: a.MTU, Flags: a.Flags.String(), Master: a.MasterIndex})
	}
	sort.Slice(s.Links, func(i, j int) bool { return s.Links[i].Name < s.Links[j].Name })
	addrs, err := netlink.AddrList(nil, familyAll)
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		s.Addrs = append(s.Addrs, names[a.LinkIndex]+" "+a.IPNet.String())
	}
	sort.Strings(s.Addrs)
	routes, err := netlink.RouteListFiltered(familyAll, &netlink.Route{Table: 0}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		s.Routes = append(s.Routes, routeString(r, names))
	}
	sort.Strings(s.Routes)
	return nil
}

func routeString(r netlink.Route, names map[int]string) string {
	dst := "default"
	if r.Dst != nil {
		dst = r.Dst.String()
	}
	gw := "-"
	if r.Gw != nil {
		gw = r.Gw.String()
	}
	return fmt.Sprintf("table %d %s via %s dev %s proto %d scope %d type %d", r.Table, dst, gw, names[r.LinkIndex], r.Protocol, r.Scope, r.Type)
}

// cgroupRoots returns every cgroup hierarchy mount point: the v1
// controllers and the unified one, from the mount table already taken.
func cgroupRoots(s *Snapshot) []string {
	var roots []string
	for _, m := range s.Mounts {
		if (m.FSType == "cgroup" || m.FSType == "cgroup2") && strings.HasPrefix(m.Point, "/sys/fs/cgroup") {
			roots = append(roots, m.Point)
		}
	}
	return roots
}

func takeCgroups(s *Snapshot) error {
	seen := map[string]bool{}
	for _, root := range cgroupRoots(s) {
		base := filepath.Join(root, "labctl")
		err := filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if !d.IsDir() {
				return nil
			}
			// An empty /labctl (the parent labctl keeps) counts as absent.
			if p == base {
				return nil
			}
			key := root + ":" + strings.TrimPrefix(p, root)
			if !seen[key] {
				seen[key] = true
				s.Cgroups = append(s.Cgroups, key)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	sort.Strings(s.Cgroups)
	return nil
}

func takeProcs(s *Snapshot) error {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return err
	}
	exclude := selfAndAncestors()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || exclude[pid] {
			continue
		}
		if p, ok := taggedProc(pid); ok {
			s.Procs = append(s.Procs, p)
		}
	}
	sort.Slice(s.Procs, func(i, j int) bool { return s.Procs[i].PID < s.Procs[j].PID })
	return nil
}

// selfAndAncestors are the caller and its parents: a test binary taking a
// snapshot must not see itself (or go test running it) as a leak.
func selfAndAncestors() map[int]bool {
	out := map[int]bool{}
	for pid := os.Getpid(); pid > 1 && !out[pid]; pid = parentPID(pid) {
		out[pid] = true
	}
	return out
}

func parentPID(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The comm field may contain spaces and parentheses: parse after the last ')'.
	rest := string(data[strings.LastIndexByte(string(data), ')')+1:])
	f := strings.Fields(rest)
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// taggedProc decides whether pid belongs to labctl, and why.
func taggedProc(pid int) (Proc, bool) {
	dir := fmt.Sprintf("/proc/%d", pid)
	comm, err := os.ReadFile(dir + "/comm")
	if err != nil {
		return Proc{}, false // gone meanwhile
	}
	p := Proc{PID: pid, Comm: strings.TrimSpace(string(comm))}
	if reapedByInit(dir) {
		// A killed host's init is a zombie until the machine's own init
		// reaps it (seconds on some machines): dead, holding nothing but
		// a pid, and not ours to collect.
		return Proc{}, false
	}
	p.Exe, _ = os.Readlink(dir + "/exe")
	p.Cgroup = labctlCgroup(dir + "/cgroup")
	exe := strings.TrimSuffix(p.Exe, " (deleted)")
	switch {
	case p.Comm == "labctl-init":
		p.Why = "comm"
	case p.Cgroup != "":
		p.Why = "cgroup"
	case filepath.Base(exe) == "labctl" || isModuleTestBinary(exe):
		p.Why = "exe"
	default:
		return Proc{}, false
	}
	return p, true
}

// reapedByInit reports whether the process is a zombie whose parent is
// the machine's PID 1.
func reapedByInit(dir string) bool {
	data, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return false
	}
	// Fields after the last ')' of "pid (comm) state ppid ...".
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return false
	}
	fields := strings.Fields(string(data[i+1:]))
	return len(fields) > 1 && fields[0] == "Z" && fields[1] == "1"
}

// labctlCgroup returns the first cgroup path of the process under /labctl/.
func labctlCgroup(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(data), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 && strings.HasPrefix(parts[2], "/labctl/") {
			return parts[2]
		}
	}
	return ""
}

// modulePackages are the base names go test gives this module's test
// binaries (<package>.test).
var modulePackages = map[string]bool{
	"labctl": true, "runner": true, "sandbox": true, "faults": true, "checks": true,
	"labs": true, "reexec": true, "hostsnap": true,
}

func isModuleTestBinary(exe string) bool {
	base := filepath.Base(exe)
	if !strings.HasSuffix(base, ".test") {
		return false
	}
	// Drivers live in sub-packages of faults/ and checks/; any of their
	// test binaries sit in a go-build dir or were built with -c.
	return modulePackages[strings.TrimSuffix(base, ".test")] || strings.Contains(exe, "labctl")
}

func takeLoops(s *Snapshot) error {
	paths, err := filepath.Glob("/sys/block/loop*/loop/backing_file")
	if err != nil {
		return err
	}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			continue // detached meanwhile
		}
		dev := filepath.Base(filepath.Dir(filepath.Dir(p)))
		s.Loops = append(s.Loops, dev+" "+strings.TrimSpace(string(data)))
	}
	sort.Strings(s.Loops)
	return nil
}

// nspawnRunDir is where systemd-nspawn keeps per-machine state on the
// machine; a variable so tests can point it elsewhere.
var nspawnRunDir = "/run/systemd/nspawn"

// takeNspawn lists the entries under nspawnRunDir two levels deep: the
// per-machine entries (propagate/<machine>, unix-export/<machine>) and
// the image locks (locks/<file>), plus any file at the top. The top-level
// directories themselves are not listed: nspawn creates them on first use
// and shares them between all its machines, so they may exist on the
// machine before any lab and outlive a lab's own entries; an empty one
// holds nothing of a lab. Deeper levels are not walked: a running
// machine's propagate directory may hold mounts of that machine.
func takeNspawn(s *Snapshot) error {
	entries, err := nspawnEntries(nspawnRunDir)
	s.Nspawn = entries
	return err
}

func nspawnEntries(root string) ([]string, error) {
	top, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range top {
		if !e.IsDir() {
			out = append(out, e.Name())
			continue
		}
		sub, err := os.ReadDir(filepath.Join(root, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		for _, c := range sub {
			name := e.Name() + "/" + c.Name()
			if c.IsDir() {
				name += "/"
			}
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out, nil
}

func takeFiles(s *Snapshot) error {
	s.Files = map[string]string{}
	for _, p := range watchedFiles {
		data, err := os.ReadFile(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			s.Files[p] = "absent"
		case err != nil:
			return err
		default:
			sum := sha256.Sum256(data)
			s.Files[p] = hex.EncodeToString(sum[:])
		}
	}
	return nil
}

// Filter returns a copy of s without the entries keep rejects. keep sees
// each entry as one line of text (a process as "comm exe cgroup"), so a
// test can scope a snapshot to its own resources when other tests create
// labs on the same machine at the same time.
func Filter(s *Snapshot, keep func(entry string) bool) *Snapshot {
	out := &Snapshot{Files: s.Files}
	out.NetNS = filterStrings(s.NetNS, keep)
	out.Addrs = filterStrings(s.Addrs, keep)
	out.Routes = filterStrings(s.Routes, keep)
	out.Cgroups = filterStrings(s.Cgroups, keep)
	out.Loops = filterStrings(s.Loops, keep)
	out.Nspawn = filterStrings(s.Nspawn, keep)
	for _, l := range s.Links {
		if keep(l.Name + " " + l.Type) {
			out.Links = append(out.Links, l)
		}
	}
	for _, m := range s.Mounts {
		if keep(m.Point + " " + m.FSType + " " + m.Source) {
			out.Mounts = append(out.Mounts, m)
		}
	}
	for _, p := range s.Procs {
		if keep(p.Comm + " " + p.Exe + " " + p.Cgroup) {
			out.Procs = append(out.Procs, p)
		}
	}
	return out
}

func filterStrings(in []string, keep func(string) bool) []string {
	var out []string
	for _, s := range in {
		if keep(s) {
			out = append(out, s)
		}
	}
	return out
}
