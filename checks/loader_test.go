package checks

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/labctl/labctl/labs"
)

// Every probe kind decodes strictly through the real loader, with its
// defaults, and a loaded lab grades through Run.
const everyProbeLab = `apiVersion: labctl/v1
name: every-probe
title: every probe kind
summary: decodes every probe kind
difficulty: beginner
duration: 5m
topics: [test]
briefing: test
hosts:
  app: {}
checks:
  - id: victim
    ask: who?
    answer: {equals: worker}
  - id: cmd
    probe: {kind: command, argv: [sh, -c, 'echo hi'], stdout: '^hi$', timeout: 3s}
  - id: proc
    probe: {kind: process, comm: worker, state_not: [D, Z], max_fds: 100}
  - id: zombies
    probe: {kind: zombies, max: 0, parent: '{{ fact "app.init_pid" }}'}
  - id: conn
    probe: {kind: connect, to: '10.0.0.1:80', expect: refused}
  - id: dns
    probe: {kind: resolve, name: db.lab, expect_addr: 10.0.0.2}
  - id: file
    probe: {kind: file, path: /ok, mode: "0644", content: "^$", size_max: 1Mi}
    stable_for: 200ms
    needs: [victim]
  - id: port
    probe: {kind: port, port: 8080, process: '^api$'}
  - id: oom
    probe: {kind: cgroup, controller: memory, counter: oom_kill, since: check}
  - id: room
    probe: {kind: cgroup, controller: pids, limit: pids, at_least: "128"}
`

func TestLoaderDecodesEveryProbe(t *testing.T) {
	lab, err := labs.Parse("every.yaml", []byte(everyProbeLab))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if got := lab.CheckByID("proc").Probe.Params.(*ProcessParams); got.Present == nil || !*got.Present {
		t.Errorf("process present default lost: %+v", got)
	}
	if got := lab.CheckByID("conn").Probe.Params.(*ConnectParams); got.Timeout.D().Seconds() != 2 {
		t.Errorf("connect timeout default = %s, want 2s", got.Timeout)
	}
	oom := lab.CheckByID("oom").Probe.Params.(*CgroupParams)
	if diff := cmp.Diff(&CgroupParams{Controller: "memory", Counter: "oom_kill", Since: "check", MaxIncrease: ptr(int64(0))}, oom); diff != "" {
		t.Errorf("cgroup params (-want +got):\n%s", diff)
	}

	// The loaded lab grades: only the file check, against a directory.
	tt, _ := fileTarget(t)
	out := Run(context.Background(), lab, tt, map[string]string{"victim": "worker"}, []string{"file"}, RunOptions{})
	if len(out) != 1 || out[0].Status != StatusPass {
		t.Errorf("file check on a loaded lab: %+v", out)
	}
}

func TestLoaderPointsAtBadProbeParams(t *testing.T) {
	tests := []struct {
		probe string
		want  string // position and a word of the message
	}{
		{"{kind: connect, to: 10.0.0.1:80, expect: closed}", ":16:"},
		{"{kind: process, state_not: [Q]}", "state_not"},
		{"{kind: cgroup, controller: memory}", "counter"},
		{"{kind: port, port: 80, proto: sctp}", "proto"},
		{"{kind: file, path: etc/hosts}", "absolute"},
		{"{kind: command, argv: [true], exit: x}", ":16:"},
	}
	for _, tc := range tests {
		src := strings.Replace(everyProbeLab[:strings.Index(everyProbeLab, "  - id: cmd")], "answer: {equals: worker}",
			"answer: {equals: worker}\n  - id: bad\n    probe: "+tc.probe, 1)
		_, err := labs.Parse("bad.yaml", []byte(src))
		if err == nil || !strings.Contains(err.Error(), "bad.yaml:") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error = %v, want a positioned error mentioning %q", tc.probe, err, tc.want)
		}
	}
}
