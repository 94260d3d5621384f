package memory_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// What a lab costs the machine, as MemAvailable sees it, measured so that
// the kernel's own bookkeeping and other people's work on the machine do
// not pass for the lab's memory. Raw MemAvailable drops during the same
// OOM lab ranged from 0 to 200 MiB on the 2-CPU VM this was written on,
// for three reasons unrelated to the lab:
//
//   - Freed pages wait on per-CPU free lists, which MemFree (and so
//     MemAvailable) does not count. Kernels since 6.7 let these lists grow
//     to high_max pages (about 1 GiB per CPU there): the 64 MiB a killed
//     worker frees may stay invisible for a while. The lists' sizes are in
//     /proc/zoneinfo, so a look adds them back.
//   - Other processes (other sessions' builds) allocate and free hundreds
//     of MiB at a time. Their anonymous and tmpfs memory is charged to
//     memory cgroups outside labctl's subtree and this test's own cgroup,
//     so a look subtracts what that grew by since the baseline.
//   - A VM's free page reporting (virtio-balloon) takes free memory off
//     the free lists in batches (about 30 MiB there) while it tells the
//     hypervisor, for up to 15 ms there. A drop therefore counts only once
//     it has held for heldFor: a lab's memory is there for as long as its
//     processes run (the worker at its limit for tens of ms before each
//     kill, an escaped one for good).

// heldFor is how long a drop must last to count: several times the
// longest free page reporting batch seen (15 ms). The lab's worker grows
// at about 140 MiB/s, so the peak it reaches right before a kill is seen
// a few MiB low; a lab that escaped its cgroup holds its memory for
// seconds and is seen in full.
const heldFor = 50 * time.Millisecond

// machineMem is where the memory of processes that are not the lab's is
// charged: the memory cgroup hierarchy's root, labctl's subtree in it and
// this test's own cgroup (where runner.Up's helpers start, so they count
// as the lab's).
type machineMem struct {
	root, labctl, self string
	v2                 bool
}

// findMachineMem locates the memory hierarchy from /proc/self/mountinfo
// and this process's cgroup in it. ok is false where the other processes'
// memory cannot be told apart: no memory.stat at the root, a hierarchy
// mounted from below its root, or this test in the root cgroup itself,
// beside everything else.
func findMachineMem() (m machineMem, ok bool) {
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return m, false
	}
	mountRoot := ""
	for _, line := range strings.Split(string(mi), "\n") {
		pre, post, found := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !found || len(f) < 5 || len(g) < 3 {
			continue
		}
		switch {
		case g[0] == "cgroup" && strings.Contains(","+g[2]+",", ",memory,"):
			m, mountRoot = machineMem{root: f[4]}, f[3]
		case g[0] == "cgroup2" && m.root == "":
			m, mountRoot = machineMem{root: f[4], v2: true}, f[3]
		}
	}
	if m.root == "" || mountRoot != "/" {
		return m, false
	}
	cg, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return m, false
	}
	for _, line := range strings.Split(strings.TrimSpace(string(cg)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if (m.v2 && parts[0] == "0") || (!m.v2 && strings.Contains(","+parts[1]+",", ",memory,")) {
			m.self = filepath.Join(m.root, parts[2])
		}
	}
	// labctl keeps every host's cgroup in this directory at the root.
	m.labctl = filepath.Join(m.root, "labctl")
	_, err = os.Stat(filepath.Join(m.root, "memory.stat"))
	return m, err == nil && m.self != "" && m.self != m.root
}

// unreclaimable is the memory charged to dir and its descendants that
// the kernel cannot give back without killing something: anonymous
// memory and tmpfs. Page cache is left out, as MemAvailable counts it as
// available. A missing cgroup (labctl's before the first host) holds
// nothing.
func (m machineMem) unreclaimable(dir string) int64 {
	b, err := os.ReadFile(filepath.Join(dir, "memory.stat"))
	if err != nil {
		return 0
	}
	keys := map[string]bool{"total_rss": true, "total_shmem": true}
	if m.v2 {
		keys = map[string]bool{"anon": true, "shmem": true}
	}
	var n int64
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, " "); ok && keys[k] {
			x, _ := strconv.ParseInt(v, 10, 64)
			n += x
		}
	}
	return n
}

// others is the unreclaimable memory of every process on the machine
// that is neither in a lab host nor this test's.
func (m machineMem) others() int64 {
	return m.unreclaimable(m.root) - m.unreclaimable(m.labctl) - m.unreclaimable(m.self)
}

// perCPUFree is the free memory on the per-CPU free lists of every zone
// (the "count:" lines of /proc/zoneinfo's pagesets).
func perCPUFree(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/zoneinfo")
	if err != nil {
		t.Error(err)
		return 0
	}
	var pages int64
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "count:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(rest), 10, 64)
			if err != nil {
				t.Error(err)
			}
			pages += n
		}
	}
	return pages * int64(os.Getpagesize())
}

// memLook is one look at the machine.
type memLook struct {
	at     time.Time
	avail  int64 // MemAvailable plus the per-CPU free lists
	others int64 // unreclaimable memory outside the lab and this test
}

// labFootprint looks at the machine until stop is called, from a baseline
// taken now (right before up). stop returns the largest drop of raw
// MemAvailable any single look saw, and the largest drop the lab accounts
// for: corrected as described above and held for heldFor.
func labFootprint(t *testing.T) (stop func() (raw, lab int64)) {
	m, separate := findMachineMem()
	if !separate {
		t.Logf("other processes' memory cannot be told apart here: it counts as the lab's")
	}
	look := func() (memLook, int64) {
		l := memLook{at: time.Now()}
		if separate {
			l.others = m.others()
		}
		plain := memAvailable(t)
		l.avail = plain + perCPUFree(t)
		return l, plain
	}
	base, basePlain := look()
	done := make(chan struct{})
	var wg sync.WaitGroup
	var raw, lab int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		type drop struct {
			at time.Time
			n  int64
		}
		var recent []drop // the drops of the last heldFor, oldest first
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			l, plain := look()
			raw = max(raw, basePlain-plain)
			// Only growth of the others' memory is taken off: what they
			// seem to free may be charges moving between cgroups (a
			// removed cgroup's go to its parent) or pages freed late,
			// and adding it to the lab made it look bigger than its
			// cgroup could hold (100 MiB right after the fs family's
			// labs, with a raw drop of 55 MiB).
			recent = append(recent, drop{l.at, (base.avail - l.avail) - max(0, l.others-base.others)})
			for len(recent) > 1 && l.at.Sub(recent[1].at) >= heldFor {
				recent = recent[1:]
			}
			// Held: the smallest drop over a span of at least heldFor.
			if l.at.Sub(recent[0].at) >= heldFor {
				held := recent[0].n
				for _, d := range recent[1:] {
					held = min(held, d.n)
				}
				lab = max(lab, held)
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	return func() (int64, int64) {
		close(done)
		wg.Wait()
		return raw, lab
	}
}
