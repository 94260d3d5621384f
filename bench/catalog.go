package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"time"

	"github.com/labctl/labctl/runner"
)

// Catalog is one `labctl test -j N labs/` run.
type Catalog struct {
	Jobs   int     `json:"jobs"`
	WallS  float64 `json:"wall_s"`
	Labs   int     `json:"labs"`
	Passed int     `json:"passed"`
	// LabS is the sum of the labs' own durations: WallS*Jobs/LabS shows
	// how much of the parallelism was used.
	LabS   float64  `json:"sum_of_lab_s"`
	Failed []string `json:"failed,omitempty"`
	// Failures say where each failed lab failed, so a failure seen once
	// in a long run can be looked into afterwards.
	Failures []LabFailure      `json:"failures,omitempty"`
	Slowest  []LabTime         `json:"slowest"`
	PerLab   map[string]string `json:"per_lab_s"`
	Residue  string            `json:"residue,omitempty"`
	Error    string            `json:"error,omitempty"`
}

// LabFailure is the first failing phase of a lab's self-test.
type LabFailure struct {
	Lab     string `json:"lab"`
	Phase   string `json:"phase"`
	Message string `json:"message"`
}

// LabTime is one lab's self-test duration.
type LabTime struct {
	Lab string  `json:"lab"`
	S   float64 `json:"s"`
}

func measureCatalog(cfg config, jobs int) Catalog {
	c := Catalog{Jobs: jobs, PerLab: map[string]string{}}
	cmd := exec.Command(cfg.labctl, "test", "-j", strconv.Itoa(jobs), "--json", "labs/")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	runErr := cmd.Run()
	c.WallS = round1(time.Since(start).Seconds())
	var out struct {
		Labs    []*runner.LabResult `json:"labs"`
		Residue string              `json:"residue"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		c.Error = fmt.Sprintf("labctl test: %v; %v\n%s", runErr, err, stderr.String())
		return c
	}
	c.Residue = out.Residue
	for _, r := range out.Labs {
		c.Labs++
		if r.Pass {
			c.Passed++
		} else {
			c.Failed = append(c.Failed, r.Lab)
			f := LabFailure{Lab: r.Lab}
			if ph := r.Failed(); ph != nil {
				f.Phase, f.Message = ph.Phase, ph.Message
				if ph.Name != "" {
					f.Phase += " (" + ph.Name + ")"
				}
			}
			c.Failures = append(c.Failures, f)
			fmt.Fprintf(os.Stderr, "catalog -j %d: %s failed in %s: %s\n", jobs, f.Lab, f.Phase, f.Message)
		}
		s := r.Duration.Seconds()
		c.LabS += s
		c.PerLab[r.Lab] = strconv.FormatFloat(round1(s), 'f', 1, 64)
		c.Slowest = append(c.Slowest, LabTime{r.Lab, round1(s)})
	}
	c.LabS = round1(c.LabS)
	sort.Slice(c.Slowest, func(i, j int) bool { return c.Slowest[i].S > c.Slowest[j].S })
	if len(c.Slowest) > 5 {
		c.Slowest = c.Slowest[:5]
	}
	if runErr != nil && len(c.Failed) == 0 && c.Residue == "" {
		c.Error = fmt.Sprintf("labctl test: %v\n%s", runErr, stderr.String())
	}
	fmt.Fprintf(os.Stderr, "catalog -j %d: %.0fs, %d/%d passed\n", jobs, c.WallS, c.Passed, c.Labs)
	return c
}
