package runner

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/labctl/labctl/runner/sandbox"
)

// GCReport says what gc removed.
type GCReport struct {
	Instances []string // ids of dead instances torn down
	Swept     []string // leftover resources removed without a ledger
	Errors    []string // what could not be removed (gc can be run again)
}

// GC tears down dead instances (their owner is gone before they became
// ready, or all their hosts' inits died) and then sweeps labctl-named
// resources that no instance directory claims.
func GC(ctx context.Context) (*GCReport, error) {
	ctx = context.WithoutCancel(ctx)
	rep := &GCReport{}
	dead, err := collectDead()
	if err != nil {
		return nil, err
	}
	for _, in := range dead {
		if err := in.teardown(ctx); err != nil {
			rep.Errors = append(rep.Errors, err.Error())
		} else {
			rep.Instances = append(rep.Instances, in.ID)
		}
		in.unlock()
	}
	if err := sweep(ctx, rep); err != nil {
		return rep, err
	}
	if len(rep.Errors) > 0 {
		return rep, fmt.Errorf("gc could not remove everything: %s", strings.Join(rep.Errors, "; "))
	}
	return rep, nil
}

// collectDead locks every dead instance. It holds the root lock while it
// scans, so an instance being created is never mistaken for a dead one;
// one whose lock is held is being worked on and is skipped.
func collectDead() ([]*Instance, error) {
	var dead []*Instance
	err := withRootLock(func(root string) error {
		dirs, err := instanceDirs(root)
		if err != nil {
			return err
		}
		for _, d := range dirs {
			in, err := lockIfDead(d)
			if err != nil {
				return err
			}
			if in != nil {
				dead = append(dead, in)
			}
		}
		return nil
	})
	return dead, err
}

func lockIfDead(dir string) (*Instance, error) {
	lock, ok, err := tryLockPath(filepath.Join(dir, lockFile))
	if err != nil || !ok {
		return nil, err
	}
	in, err := loadInstance(dir)
	if err != nil {
		// No instance.json: its creator died right after claiming the id.
		in = &Instance{ID: filepath.Base(dir), Dir: dir, facts: map[string]string{}}
	} else if !in.isDead() {
		lock.Close()
		return nil, nil
	}
	in.lock = lock
	return in, nil
}

// isDead: the owner gave up before ready, or no host is alive any more.
// The caller holds the instance lock, which Up and Down hold while they
// work, so an instance that is not ready has no live owner building it
// (the owner's pid check would only add a PID-reuse race).
func (in *Instance) isDead() bool {
	if in.Phase != PhaseReady {
		return true
	}
	for _, h := range in.Hosts {
		if sandbox.Alive(h) {
			return false
		}
	}
	return true
}

// sweep removes labctl-<id>-* network namespaces, /labctl/<id> cgroups
// and mounts under the state root whose id has no instance directory.
// Under a private state root (tests) only ids it issued are touched, so
// it never removes another root's lab.
func sweep(ctx context.Context, rep *GCReport) error {
	root := StateRoot()
	owned, err := sweepScope(root)
	if err != nil {
		return err
	}
	sweepNetNS(owned, rep)
	// /run/netns itself: what labctl made of it goes once it is empty,
	// even when the ledgers that recorded it are lost.
	if err := sandbox.ReleaseNetnsDir(); err != nil {
		rep.Errors = append(rep.Errors, err.Error())
	}
	sweepCgroups(ctx, owned, rep)
	sweepMounts(root, owned, rep)
	return nil
}

// sweepScope returns a predicate: may gc remove resources of this id?
func sweepScope(root string) (func(id string) bool, error) {
	issued := map[string]bool{}
	if data, err := os.ReadFile(filepath.Join(root, issuedFile)); err == nil {
		for _, id := range strings.Fields(string(data)) {
			issued[id] = true
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	all := root == DefaultStateRoot
	return func(id string) bool {
		if !validID(id) || (!all && !issued[id]) {
			return false
		}
		_, err := os.Stat(filepath.Join(root, id))
		return errors.Is(err, fs.ErrNotExist)
	}, nil
}

// idOf extracts <id> from labctl-<id>[-...].
func idOf(name string) string {
	rest, ok := strings.CutPrefix(name, "labctl-")
	if !ok {
		return ""
	}
	id, _, _ := strings.Cut(rest, "-")
	return id
}

func sweepNetNS(owned func(string) bool, rep *GCReport) {
	ents, _ := os.ReadDir("/run/netns")
	for _, e := range ents {
		if !owned(idOf(e.Name())) {
			continue
		}
		p := filepath.Join("/run/netns", e.Name())
		if err := unmountDetach(p); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			rep.Errors = append(rep.Errors, fmt.Sprintf("unmount %s: %v", p, err))
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			rep.Errors = append(rep.Errors, fmt.Sprintf("remove %s: %v", p, err))
			continue
		}
		rep.Swept = append(rep.Swept, "netns "+e.Name())
	}
}

// cgroupRoots lists the mounted cgroup hierarchies (v1 controllers and
// the unified one).
func cgroupRoots() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		for i, fl := range fields {
			if fl == "-" && i+1 < len(fields) && (fields[i+1] == "cgroup" || fields[i+1] == "cgroup2") {
				out = append(out, fields[4])
			}
		}
	}
	return out
}

func sweepCgroups(ctx context.Context, owned func(string) bool, rep *GCReport) {
	for _, root := range cgroupRoots() {
		ents, _ := os.ReadDir(filepath.Join(root, "labctl"))
		for _, e := range ents {
			if !e.IsDir() || !owned(e.Name()) {
				continue
			}
			dir := filepath.Join(root, "labctl", e.Name())
			if err := sandbox.RemoveCgroupTree(ctx, dir); err != nil {
				rep.Errors = append(rep.Errors, err.Error())
				continue
			}
			rep.Swept = append(rep.Swept, "cgroup "+dir)
		}
	}
}

func sweepMounts(root string, owned func(string) bool, rep *GCReport) {
	for _, p := range mountsUnder(root) {
		rel := strings.TrimPrefix(p, root+"/")
		id, _, _ := strings.Cut(rel, "/")
		if !owned(id) {
			continue
		}
		if err := unmountDetach(p); err != nil {
			rep.Errors = append(rep.Errors, fmt.Sprintf("unmount %s: %v", p, err))
			continue
		}
		rep.Swept = append(rep.Swept, "mount "+p)
	}
}
