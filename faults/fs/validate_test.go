package fs_test

import (
	"strings"
	"testing"

	"github.com/labctl/labctl/labs"
)

// TestLoaderRefusesPlantsOffLabLocalMounts: a setuid plant or a
// world-writable directory outside the host's declared filesystems is a
// load error at the field, before anything exists (not a failure at up).
func TestLoaderRefusesPlantsOffLabLocalMounts(t *testing.T) {
	const lab = `apiVersion: labctl/v1
name: plants
title: Plants
summary: Plants off and on lab-local filesystems.
difficulty: beginner
duration: 5m
topics: [testing]
briefing: Nothing to see.
hosts:
  app:
    users:
      - {name: maria, uid: 2001}
      - {name: tomas, uid: 2002}
    mounts:
      - {path: /srv/exchange, type: tmpfs, size: 4Mi}
faults:
  - id: off
    kind: fs.sticky
    host: app
    with: {dir: /srv/other, owner: maria, other: tomas}
  - id: on
    kind: fs.sticky
    host: app
    with: {dir: /srv/exchange/inbox, owner: maria, other: tomas}
  - id: plant
    kind: fs.setuid
    host: app
    with: {path: /usr/local/bin/helper}
  - id: tmp
    kind: fs.setuid
    host: app
    with: {path: /tmp/helper}
checks:
  - id: q
    ask: Why?
    answer: {equals: because}
`
	_, err := labs.Parse("plants.yaml", []byte(lab))
	if err == nil {
		t.Fatal("loaded without error; want the two plants off lab-local filesystems refused")
	}
	got := err.Error()
	for _, want := range []string{
		"plants.yaml:20:17: dir: /srv/other is not on a lab-local filesystem of host app",
		"plants.yaml:28:18: path: /usr/local/bin/helper is not on a lab-local filesystem of host app",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("errors:\n%s\nwant one starting %q", got, want)
		}
	}
	if n := strings.Count(got, "lab-local"); n != 2 {
		t.Errorf("%d lab-local errors, want 2 (the plants on the tmpfs and below /tmp are fine):\n%s", n, got)
	}
}
