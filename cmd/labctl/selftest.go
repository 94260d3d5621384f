package main

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/labctl/labctl/internal/hostsnap"
	"github.com/labctl/labctl/labs"
	"github.com/labctl/labctl/runner"
)

func (a *app) testCmd() *cobra.Command {
	var (
		jobs, repeat int
		junitFile    string
		asJSON, keep bool
	)
	cmd := &cobra.Command{
		Use:   "test [LAB|DIR|FILE...]",
		Short: "Prove labs: the fault is real, wrong fixes fail, the solution heals, nothing is left",
		Long: `For each lab: up; every state check the fault breaks fails and no question passes
unanswered; each wrong fix, applied to a fresh instance, leaves a check failing; the
reference solution makes every check pass; down leaves nothing of the instance, and the
machine's snapshot after the whole run equals the one before.
With no argument, every lab of the catalog (and of --labs directories) is tested.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if jobs < 1 || repeat < 1 {
				return usageErr("test: -j and --repeat must be at least 1")
			}
			list, err := a.testTargets(args)
			if err != nil {
				return err
			}
			if err := a.environment(); err != nil {
				return err
			}
			ctx, stop := interruptible()
			defer stop()
			// The first up collects dead instances anyway; collected first,
			// their leftovers are not mistaken for a change the labs made.
			if _, err := runner.GC(ctx); err != nil {
				return failErr(fmt.Errorf("gc before testing: %w", err))
			}
			before, err := hostsnap.Take()
			if err != nil {
				return failErr(fmt.Errorf("snapshot before: %w", err))
			}
			results := a.runSelfTests(ctx, list, jobs, repeat, keep, !asJSON)
			residue := ""
			if !keep || allPassed(results) {
				residue, err = runner.SettledDiff(before)
				if err != nil {
					return failErr(fmt.Errorf("snapshot after: %w", err))
				}
			}
			if junitFile != "" {
				if err := writeJUnit(junitFile, results, residue); err != nil {
					return failErr(err)
				}
			}
			passed, failed := 0, 0
			for _, r := range results {
				if r.Pass {
					passed++
				} else {
					failed++
				}
			}
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(struct {
					Labs    []*runner.LabResult `json:"labs"`
					Residue string              `json:"residue,omitempty"`
				}{results, residue}); err != nil {
					return err
				}
			} else {
				if residue != "" {
					fmt.Fprintf(a.stdout, "%s the machine differs after the run (-before +after):\n%s\n", a.paint(ansiRed, "✗ residue:"), residue)
				}
				fmt.Fprintf(a.stdout, "labs: %d passed, %d failed\n", passed, failed)
			}
			if failed > 0 || residue != "" {
				return silentExit(exitFail)
			}
			return nil
		},
	}
	cmd.Flags().IntVarP(&jobs, "jobs", "j", 1, "labs tested in parallel")
	cmd.Flags().IntVar(&repeat, "repeat", 1, "test each lab this many times (flaky labs fail)")
	cmd.Flags().StringVar(&junitFile, "junit", "", "also write JUnit XML to this file")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the results as JSON")
	cmd.Flags().BoolVar(&keep, "keep-on-failure", false, "leave a failing lab's instance running to inspect it")
	return cmd
}

// testTargets resolves the labs to test: names, files and directories.
func (a *app) testTargets(args []string) ([]*labs.Lab, error) {
	if len(args) == 0 {
		all, err := labs.LoadAll(a.labDirs)
		if err != nil {
			return nil, a.labError(err)
		}
		return all, nil
	}
	var out []*labs.Lab
	for _, arg := range args {
		if st, err := os.Stat(arg); err == nil {
			_ = st // a file or a directory: both are paths to load
			list, err := labs.LoadPaths([]string{arg})
			if err != nil {
				return nil, a.labError(err)
			}
			out = append(out, list...)
			continue
		}
		l, err := labs.Resolve(arg, a.labDirs)
		if err != nil {
			return nil, a.labError(err)
		}
		out = append(out, l)
	}
	return out, nil
}

func (a *app) runSelfTests(ctx context.Context, list []*labs.Lab, jobs, repeat int, keep, lines bool) []*runner.LabResult {
	type job struct {
		lab *labs.Lab
		run int
		idx int
	}
	var queue []job
	for run := 1; run <= repeat; run++ {
		for _, l := range list {
			queue = append(queue, job{lab: l, run: run, idx: len(queue)})
		}
	}
	results := make([]*runner.LabResult, len(queue))
	var mu sync.Mutex
	phaseLine := func(lab string, run int, p runner.PhaseResult) {
		if !lines {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		mark := a.paint(ansiGreen, "✓")
		if !p.Pass {
			mark = a.paint(ansiRed, "✗")
		}
		name := p.Phase
		if p.Name != "" {
			name += " (" + p.Name + ")"
		}
		label := lab
		if repeat > 1 {
			label = fmt.Sprintf("%s#%d", lab, run)
		}
		fmt.Fprintf(a.stdout, "%s %-28s %-40s %6.2fs\n", mark, label, name, p.Duration.Seconds())
		if !p.Pass && p.Message != "" {
			fmt.Fprintf(a.stdout, "    %s\n", strings.ReplaceAll(p.Message, "\n", "\n    "))
		}
	}
	work := make(chan job)
	var wg sync.WaitGroup
	for w := 0; w < jobs; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range work {
				results[j.idx] = runner.SelfTest(ctx, j.lab, runner.TestOptions{Run: j.run, KeepOnFailure: keep, Phase: phaseLine})
			}
		}()
	}
	for _, j := range queue {
		if ctx.Err() != nil {
			break
		}
		work <- j
	}
	close(work)
	wg.Wait()
	var out []*runner.LabResult
	for _, r := range results {
		if r != nil {
			out = append(out, r)
		}
	}
	return out
}

func allPassed(results []*runner.LabResult) bool {
	for _, r := range results {
		if !r.Pass {
			return false
		}
	}
	return true
}

// JUnit XML, the subset every CI system reads.
type junitSuites struct {
	XMLName  xml.Name     `xml:"testsuites"`
	Name     string       `xml:"name,attr"`
	Tests    int          `xml:"tests,attr"`
	Failures int          `xml:"failures,attr"`
	Time     float64      `xml:"time,attr"`
	Suites   []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name      string      `xml:"name,attr"`
	Tests     int         `xml:"tests,attr"`
	Failures  int         `xml:"failures,attr"`
	Time      float64     `xml:"time,attr"`
	Timestamp string      `xml:"timestamp,attr,omitempty"`
	Cases     []junitCase `xml:"testcase"`
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	Classname string        `xml:"classname,attr"`
	Time      float64       `xml:"time,attr"`
	Failure   *junitFailure `xml:"failure,omitempty"`
}

type junitFailure struct {
	Message string `xml:"message,attr"`
	Type    string `xml:"type,attr"`
	Text    string `xml:",chardata"`
}

func buildJUnit(results []*runner.LabResult, residue string) junitSuites {
	out := junitSuites{Name: "labctl test"}
	for _, r := range results {
		name := r.Lab
		if r.Run > 1 {
			name = fmt.Sprintf("%s#%d", r.Lab, r.Run)
		}
		s := junitSuite{Name: name, Time: r.Duration.Seconds(), Timestamp: time.Now().UTC().Format(time.RFC3339)}
		for _, p := range r.Phases {
			c := junitCase{Name: p.Phase, Classname: "labs." + r.Lab, Time: p.Duration.Seconds()}
			if p.Name != "" {
				c.Name += ": " + p.Name
			}
			if !p.Pass {
				c.Failure = &junitFailure{Message: firstLine(p.Message), Type: p.Phase, Text: p.Message}
				s.Failures++
			}
			s.Cases = append(s.Cases, c)
			s.Tests++
		}
		out.Suites = append(out.Suites, s)
		out.Tests += s.Tests
		out.Failures += s.Failures
		out.Time += s.Time
	}
	if residue != "" {
		out.Suites = append(out.Suites, junitSuite{Name: "residue", Tests: 1, Failures: 1, Cases: []junitCase{{
			Name: "machine snapshot", Classname: "labctl",
			Failure: &junitFailure{Message: "the machine differs after the run", Type: "residue", Text: residue},
		}}})
		out.Tests++
		out.Failures++
	}
	return out
}

func writeJUnit(path string, results []*runner.LabResult, residue string) error {
	data, err := xml.MarshalIndent(buildJUnit(results, residue), "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append([]byte(xml.Header), append(data, '\n')...), 0o644)
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
