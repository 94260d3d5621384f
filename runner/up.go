package runner

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/labctl/labctl/faults"
	"github.com/labctl/labctl/labs"
	"github.com/labctl/labctl/runner/sandbox"
)

// releaseTimeout bounds the removal of one resource at teardown.
const releaseTimeout = 30 * time.Second

// maxHostName is the longest host name the sandbox accepts (names end
// up in netns and cgroup names).
const maxHostName = 12

// UpOptions tune Up.
type UpOptions struct {
	Name     string           // instance name; default <lab>-<n>
	Seed     *int64           // default: the lab's seed, else drawn
	Progress func(msg string) // progress lines, may be nil
}

// Up brings a lab up: hosts, links, routes, faults, each recorded in the
// ledger before it exists. It first tears down instances that died. On
// any failure everything created is torn down again and the error is
// returned.
func Up(ctx context.Context, lab *labs.Lab, opt UpOptions) (*Instance, error) {
	if err := preflight(lab); err != nil {
		return nil, err
	}
	if err := CheckEnvironment(); err != nil {
		return nil, err
	}
	if rep, err := GC(ctx); err != nil && opt.Progress != nil {
		opt.Progress("gc before up: " + err.Error())
	} else if rep != nil && len(rep.Instances) > 0 && opt.Progress != nil {
		opt.Progress("removed dead instances: " + strings.Join(rep.Instances, ", "))
	}
	in, err := createInstance(lab, opt)
	if err != nil {
		return nil, err
	}
	defer in.unlock()
	if err := in.build(ctx); err != nil {
		in.Phase = PhaseFailed
		_ = in.save() // best effort: the teardown below decides what is left
		if terr := in.teardown(ctx); terr != nil {
			return nil, fmt.Errorf("up %s: %w (teardown: %v; run labctl gc)", lab.Name, err, terr)
		}
		return nil, fmt.Errorf("up %s: %w", lab.Name, err)
	}
	if err := in.setPhase(PhaseReady); err != nil {
		return nil, errors.Join(err, in.teardown(ctx))
	}
	_ = in.RecordEvent("up", map[string]any{"lab": in.LabName, "seed": in.Seed})
	return in, nil
}

// preflight rejects a lab the runner cannot build before anything exists
// (the loader validates the format; this guards Go-built labs too).
func preflight(lab *labs.Lab) error {
	if lab == nil || lab.Name == "" || len(lab.Hosts) == 0 {
		return errors.New("invalid lab: it needs a name and at least one host")
	}
	seen := map[string]bool{}
	for _, h := range lab.Hosts {
		if h.Name == "" || len(h.Name) > maxHostName || seen[h.Name] {
			return fmt.Errorf("invalid lab %s: host name %q must be unique and 1-%d characters", lab.Name, h.Name, maxHostName)
		}
		seen[h.Name] = true
	}
	for i, l := range lab.Links {
		if !seen[l.A] || !seen[l.B] || l.A == l.B {
			return fmt.Errorf("invalid lab %s: link %d joins %q and %q: both must be distinct hosts of the lab", lab.Name, i+1, l.A, l.B)
		}
	}
	for _, f := range lab.Faults {
		if _, ok := faults.Lookup(f.Kind); !ok {
			return fmt.Errorf("invalid lab %s: fault %s: kind %q is not built into this labctl", lab.Name, f.ID, f.Kind)
		}
		if !seen[f.Host] {
			return fmt.Errorf("invalid lab %s: fault %s: no host %q", lab.Name, f.ID, f.Host)
		}
	}
	// Addresses and routes only need a block number to be checked.
	if _, err := planLinks(lab, 1); err != nil {
		return fmt.Errorf("invalid lab %s: %w", lab.Name, err)
	}
	return nil
}

// createInstance makes the instance directory, locked, with instance.json
// (phase creating), lab.yaml and an empty ledger, before any resource.
func createInstance(lab *labs.Lab, opt UpOptions) (*Instance, error) {
	in := &Instance{
		LabName:  lab.Name,
		LabFile:  lab.File,
		Seed:     drawSeed(lab, opt),
		Created:  time.Now().UTC(),
		Phase:    PhaseCreating,
		Lab:      lab,
		facts:    map[string]string{},
		progress: opt.Progress,
	}
	in.Owner.PID = os.Getpid()
	in.Owner.StartTime, _ = processStartTime(in.Owner.PID)
	err := withRootLock(func(root string) error {
		name, err := uniqueName(root, lab.Name, opt.Name)
		if err != nil {
			return err
		}
		in.Name = name
		return in.makeDir(root)
	})
	if err != nil {
		return nil, err
	}
	if err := in.initDir(); err != nil {
		_ = in.removeDir()
		in.unlock()
		return nil, err
	}
	return in, nil
}

// makeDir claims a fresh id (mkdir is the atomic claim) and locks it. It
// runs under the root lock so gc never sees the directory unlocked.
func (in *Instance) makeDir(root string) error {
	for attempt := 0; ; attempt++ {
		in.ID = newID()
		in.Dir = filepath.Join(root, in.ID)
		err := os.Mkdir(in.Dir, 0o700)
		if errors.Is(err, fs.ErrExist) && attempt < 10 {
			continue
		}
		if err != nil {
			return fmt.Errorf("create instance directory: %w", err)
		}
		break
	}
	if err := appendLine(filepath.Join(root, issuedFile), in.ID); err != nil {
		return err
	}
	lock, err := lockPath(filepath.Join(in.Dir, lockFile))
	if err != nil {
		os.Remove(in.Dir)
		return err
	}
	in.lock = lock
	return nil
}

func (in *Instance) initDir() error {
	if err := in.save(); err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(in.Dir, labFile), in.Lab.Source); err != nil {
		return fmt.Errorf("save lab source: %w", err)
	}
	if err := os.Mkdir(filepath.Join(in.Dir, hostsDir), 0o700); err != nil {
		return err
	}
	l, err := openLedger(filepath.Join(in.Dir, ledgerFile))
	if err != nil {
		return err
	}
	in.ledger = l
	return nil
}

func (in *Instance) unlock() {
	if in.ledger != nil {
		in.ledger.close()
		in.ledger = nil
	}
	if in.lock != nil {
		in.lock.Close()
		in.lock = nil
	}
}

func drawSeed(lab *labs.Lab, opt UpOptions) int64 {
	switch {
	case opt.Seed != nil:
		return *opt.Seed
	case lab.Seed != nil:
		return *lab.Seed
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	return int64(binary.BigEndian.Uint64(b[:]) >> 1)
}

// uniqueName returns the requested name if free; without one, the lab's
// name, or <lab>-<n> when that is taken.
func uniqueName(root, labName, want string) (string, error) {
	taken := map[string]bool{}
	dirs, err := instanceDirs(root)
	if err != nil {
		return "", err
	}
	for _, d := range dirs {
		if in, err := loadInstance(d); err == nil {
			taken[in.Name] = true
		}
	}
	if want != "" {
		if validID(want) {
			return "", fmt.Errorf("instance name %q looks like an instance id; choose another --name", want)
		}
		if taken[want] {
			return "", fmt.Errorf("an instance called %q is already running (choose another --name)", want)
		}
		return want, nil
	}
	if !taken[labName] && !validID(labName) {
		return labName, nil
	}
	for n := 2; ; n++ {
		name := labName + "-" + strconv.Itoa(n)
		if !taken[name] {
			return name, nil
		}
	}
}

// build creates everything the lab needs, in dependency order.
func (in *Instance) build(ctx context.Context) error {
	if needsBlock(in.Lab) {
		if err := in.allocateBlock(); err != nil {
			return err
		}
	}
	plans, err := planLinks(in.Lab, in.AddrBlock)
	if err != nil {
		return err
	}
	for _, p := range plans {
		in.Addresses = append(in.Addresses, p.A, p.B)
	}
	in.planFacts()
	if err := in.startHosts(ctx); err != nil {
		return err
	}
	in.logf("wiring %d link(s)", len(plans))
	if err := in.createLinks(plans); err != nil {
		return err
	}
	if err := in.addRoutes(); err != nil {
		return err
	}
	if err := in.enableForwarding(); err != nil {
		return err
	}
	if err := in.saveFacts(); err != nil {
		return err
	}
	return in.applyFaults(ctx)
}

func (in *Instance) startHosts(ctx context.Context) error {
	for _, lh := range in.Lab.Hosts {
		stateDir := filepath.Join(in.Dir, hostsDir, lh.Name)
		if err := os.Mkdir(stateDir, 0o700); err != nil {
			return err
		}
		spec, err := in.hostSpec(lh, stateDir)
		if err != nil {
			return err
		}
		in.logf("starting host %s", lh.Name)
		h, err := sandbox.Start(ctx, spec, in.recorder())
		if err != nil {
			return fmt.Errorf("start host %s: %w", lh.Name, err)
		}
		in.Hosts = append(in.Hosts, h)
		in.hostStarted(h)
		if err := in.save(); err != nil {
			return err
		}
	}
	return nil
}

// recorder is the sandbox's way into the ledger.
func (in *Instance) recorder() sandbox.Recorder {
	return func(kind, name string, data any) error {
		_, err := in.ledger.create(kind, name, data)
		return err
	}
}

// Down tears the instance down. Ctrl-C does not interrupt it.
func (in *Instance) Down(ctx context.Context) error {
	lock, err := lockPath(filepath.Join(in.Dir, lockFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil // already removed
	}
	if err != nil {
		return err
	}
	in.lock = lock
	defer in.unlock()
	if _, err := os.Stat(filepath.Join(in.Dir, instanceFile)); errors.Is(err, fs.ErrNotExist) {
		return nil // someone else finished the teardown while we waited
	}
	_ = in.RecordEvent("down", nil)
	if err := in.setPhase(PhaseStopping); err != nil {
		return err
	}
	return in.teardown(ctx)
}

// teardown releases every resource not yet gone, newest first, then
// removes the instance directory. It is not interrupted by Ctrl-C nor by
// ctx's cancellation; each release has its own timeout. The caller holds
// the instance lock.
func (in *Instance) teardown(ctx context.Context) error {
	stop := ignoreInterrupts()
	defer stop()
	ctx = context.WithoutCancel(ctx)
	if in.ledger == nil {
		l, err := openLedger(filepath.Join(in.Dir, ledgerFile))
		if err != nil {
			return err
		}
		in.ledger = l
	}
	recs, err := readLedger(in.ledger.path)
	if err != nil {
		return err
	}
	var errs []error
	live := liveResources(recs)
	for i := len(live) - 1; i >= 0; i-- {
		if err := in.releaseOne(ctx, live[i]); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("teardown of %s left resources (labctl gc retries): %w", in.ID, errors.Join(errs...))
	}
	in.ledger.close()
	in.ledger = nil
	return in.removeDir()
}

func (in *Instance) releaseOne(ctx context.Context, r record) error {
	rctx, cancel := context.WithTimeout(ctx, releaseTimeout)
	defer cancel()
	var err error
	switch r.Kind {
	case kindLink:
		err = removeLink(rctx, r.Data)
	case kindAddrBlock:
		err = releaseBlock(r.Data, in.ID)
	case kindFault:
		err = in.revertFault(rctx, r.Data)
	default:
		if release, ok := faults.Releaser(r.Kind); ok {
			err = release(rctx, r.Name, r.Data)
		} else {
			err = sandbox.Release(rctx, r.Kind, r.Name, r.Data)
		}
	}
	if err != nil {
		return fmt.Errorf("release %s %s: %w", r.Kind, r.Name, err)
	}
	return in.ledger.gone(r.Seq)
}

// removeDir removes the instance directory, first detaching anything
// still mounted below it.
func (in *Instance) removeDir() error {
	unmountUnder(in.Dir)
	if err := os.RemoveAll(in.Dir); err != nil {
		return fmt.Errorf("remove %s: %w", in.Dir, err)
	}
	return nil
}

// unmountUnder lazily unmounts every mount point below dir, deepest first.
func unmountUnder(dir string) []string {
	points := mountsUnder(dir)
	sort.Sort(sort.Reverse(sort.StringSlice(points)))
	for _, p := range points {
		_ = unmountDetach(p)
	}
	return points
}

func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			out = append(out, fields[4])
		}
	}
	return out
}

// ignoreInterrupts keeps SIGINT from killing the process until the
// returned function runs: a half-finished teardown is worse than a slow one.
func ignoreInterrupts() func() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-ch:
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(ch)
		close(done)
	}
}

// processStartTime reads field 22 of /proc/PID/stat (clock ticks since
// boot): with the PID it identifies a process across PID reuse.
func processStartTime(pid int) (uint64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 20 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	return strconv.ParseUint(fields[19], 10, 64)
}

// issuedFile lists every id this state root handed out; gc's sweep only
// touches resources of those ids unless the root is the machine's default.
const issuedFile = "issued"

func appendLine(path, line string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteString(line + "\n"); err != nil {
		return err
	}
	return f.Sync()
}
