package main

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"github.com/labctl/labctl/internal/crashgc"
	"github.com/labctl/labctl/internal/hostsnap"
	"github.com/labctl/labctl/runner"
)

type soakOptions struct {
	cycles, netCycles, kills int
	seed                     int64
	killLog                  string
	replay                   string // LAB@DELAY: run this one kill point only
}

// soakBlock counts one block's outcomes.
type soakBlock struct {
	name     string
	runs     int
	failures int // a command failed
	residue  int // the machine differed from the snapshot afterwards
	extra    string
	took     time.Duration
}

// How often the up/down blocks compare the machine with the snapshot
// between their end-of-block checks: residue is then pinned to a window.
const checkEvery = 100

func runSoak(cfg config, o soakOptions) error {
	if err := requireIdle(cfg); err != nil {
		return err
	}
	before, err := hostsnap.Take()
	if err != nil {
		return err
	}
	if o.replay != "" {
		return replayKill(cfg, o.replay, before)
	}
	start := time.Now()
	var blocks []*soakBlock
	blocks = append(blocks, upDownBlock(cfg, labSingle, o.cycles, &before))
	blocks = append(blocks, upDownBlock(cfg, labNet, o.netCycles, &before))
	kb, err := killBlock(cfg, o, &before)
	if err != nil {
		return err
	}
	blocks = append(blocks, kb)

	fmt.Printf("\n| block | runs | failed commands | residue | time | notes |\n| --- | --- | --- | --- | --- | --- |\n")
	bad := 0
	for _, b := range blocks {
		fmt.Printf("| %s | %d | %d | %d | %s | %s |\n", b.name, b.runs, b.failures, b.residue, b.took.Round(time.Second), b.extra)
		bad += b.failures + b.residue
	}
	fmt.Printf("\nsoak took %s; kill points in %s\n", time.Since(start).Round(time.Second), o.killLog)
	if bad > 0 {
		return fmt.Errorf("%d failed commands or residues", bad)
	}
	fmt.Println("0 residue")
	return nil
}

// upDownBlock brings lab up and down n times.
func upDownBlock(cfg config, lab string, n int, before **hostsnap.Snapshot) *soakBlock {
	b := &soakBlock{name: fmt.Sprintf("up/down %s", lab)}
	start := time.Now()
	name := "soak-" + lab
	for i := 1; i <= n; i++ {
		b.runs++
		if _, err := timed(cfg.labctl, "up", "--name", name, lab); err != nil {
			b.failures++
			fmt.Fprintf(os.Stderr, "\n%s cycle %d: %v\n", lab, i, err)
		} else if _, err := timed(cfg.labctl, "down", name); err != nil {
			b.failures++
			fmt.Fprintf(os.Stderr, "\n%s cycle %d: %v\n", lab, i, err)
		}
		if i%checkEvery == 0 || i == n {
			checkResidue(cfg, b, fmt.Sprintf("%s cycles %d-%d", lab, max(i-checkEvery+1, 1), i), before)
		}
		fmt.Fprintf(os.Stderr, "\r%s %d/%d", b.name, i, n)
	}
	fmt.Fprintln(os.Stderr)
	b.took = time.Since(start)
	return b
}

// checkResidue compares the machine with the snapshot.
func checkResidue(cfg config, b *soakBlock, where string, before **hostsnap.Snapshot) {
	diff, err := runner.SettledDiff(*before)
	if err != nil {
		diff = err.Error()
	}
	if diff != "" {
		foundResidue(cfg, b, where, diff, before)
	}
}

// foundResidue counts and reports a residue, cleans up and continues from
// the machine as it is then, so one leak is counted once and the blocks
// after it still measure.
func foundResidue(cfg config, b *soakBlock, where, diff string, before **hostsnap.Snapshot) {
	b.residue++
	fmt.Fprintf(os.Stderr, "\nRESIDUE after %s (-before +after):\n%s\n", where, diff)
	_, _ = timed(cfg.labctl, "down", "--all")
	_, _ = timed(cfg.labctl, "gc")
	if now, err := hostsnap.Take(); err == nil {
		*before = now
	}
}

// killLab is which lab kill i (0-based) uses: mostly the default lab, a
// fifth the network lab, a tenth a systemd host (the slowest to build
// and to tear down after a kill).
func killLab(i int) string {
	switch i % 10 {
	case 7, 8:
		return labNet
	case 9:
		return labSystemd
	}
	return labSingle
}

// killBlock SIGKILLs `labctl up` at random points within a measured up of
// the same lab, then gc (and down if up had finished); each kill point is
// logged (seed, lab, delay) so a failure can be replayed.
func killBlock(cfg config, o soakOptions, before **hostsnap.Snapshot) (*soakBlock, error) {
	b := &soakBlock{name: "SIGKILL up + gc"}
	start := time.Now()
	seed := o.seed
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	rng := rand.New(rand.NewPCG(uint64(seed), 7))
	logf, err := os.Create(o.killLog)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "# seed %d; replay one kill point with: labbench soak --replay LAB@DELAY\n", seed)
	upTime := map[string]time.Duration{}
	for _, lab := range []string{labSingle, labNet, labSystemd} {
		d, err := crashgc.MeasureUp(cfg.labctl, lab, "soak-measure")
		if err != nil {
			return nil, err
		}
		upTime[lab] = d
		fmt.Fprintf(logf, "# a full up of %s takes %s\n", lab, d)
	}
	finished := 0
	for i := 0; i < o.kills; i++ {
		lab := killLab(i)
		delay := time.Duration(rng.Int64N(int64(upTime[lab]) + 1))
		done, err := crashgc.KillUpThenGC(cfg.labctl, lab, "soak-kill", delay, *before)
		if done {
			finished++
		}
		fmt.Fprintf(logf, "kill %3d %s@%s: up %s", i+1, lab, delay, map[bool]string{true: "had finished", false: "was killed"}[done])
		var residue *crashgc.ResidueError
		switch {
		case errors.As(err, &residue):
			fmt.Fprintf(logf, ": RESIDUE\n%s\n", residue.Diff)
			foundResidue(cfg, b, fmt.Sprintf("kill %d (%s at %s)", i+1, lab, delay), residue.Diff, before)
		case err != nil:
			b.failures++
			fmt.Fprintf(logf, ": FAILED %v\n", err)
			fmt.Fprintf(os.Stderr, "\nkill %d (%s at %s): %v\n", i+1, lab, delay, err)
			checkResidue(cfg, b, fmt.Sprintf("kill %d", i+1), before)
		default:
			fmt.Fprintln(logf)
		}
		b.runs++
		fmt.Fprintf(os.Stderr, "\r%s %d/%d", b.name, i+1, o.kills)
	}
	fmt.Fprintln(os.Stderr)
	b.extra = fmt.Sprintf("seed %d; up had finished before the kill in %d", seed, finished)
	b.took = time.Since(start)
	return b, nil
}

// replayKill runs one logged kill point (LAB@DELAY) again.
func replayKill(cfg config, point string, before *hostsnap.Snapshot) error {
	lab, at, ok := strings.Cut(point, "@")
	delay, err := time.ParseDuration(at)
	if !ok || err != nil {
		return fmt.Errorf("--replay %q: want LAB@DELAY, e.g. first-look@63.7ms", point)
	}
	done, err := crashgc.KillUpThenGC(cfg.labctl, lab, "soak-kill", delay, before)
	fmt.Printf("%s: up %s\n", point, map[bool]string{true: "had finished", false: "was killed"}[done])
	return err
}
