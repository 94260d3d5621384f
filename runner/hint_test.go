package runner

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/labctl/labctl/labs"
)

// hintLab has one hint per kind of gate: none, time, a failing check, and
// time and a failing check together.
const hintLab = `apiVersion: labctl/v1
name: hints
title: Hint gates
summary: Hints behind every kind of gate.
difficulty: beginner
duration: 5m
topics: [testing]
briefing: Answer two questions.
hosts:
  app: {}
checks:
  - id: q1
    ask: First?
    answer: {equals: a}
  - id: q2
    ask: Second?
    answer: {equals: b}
hints:
  - ungated
  - text: timed
    after: 2m
  - text: while q1 fails
    when_failing: [q1]
  - text: late, while q2 fails
    after: 10m
    when_failing: [q2]
`

// TestHintGates walks the gates in a lab without hosts: answer checks are
// graded from recorded answers only, and elapsed time is the instance's
// age, set here instead of waited for.
func TestHintGates(t *testing.T) {
	lab, err := labs.Parse("hints.yaml", []byte(hintLab))
	if err != nil {
		t.Fatal(err)
	}
	in := &Instance{Lab: lab, Dir: t.TempDir(), Created: time.Now().Add(-5 * time.Minute)}
	ctx := context.Background()

	next := func(want string) {
		t.Helper()
		h, err := in.Hint(ctx)
		if err != nil {
			t.Fatalf("Hint: %v, want %q", err, want)
		}
		if h.Text != want {
			t.Fatalf("Hint = %q, want %q", h.Text, want)
		}
	}
	none := func(waitOpens bool, shown int) {
		t.Helper()
		_, err := in.Hint(ctx)
		var nh *NoHintError
		if !errors.As(err, &nh) {
			t.Fatalf("Hint: %v, want no hint", err)
		}
		if (nh.NextIn > 0) != waitOpens || nh.Shown != shown {
			t.Fatalf("no hint: NextIn %s, Shown %d; want a time gate opening %v, %d shown", nh.NextIn, nh.Shown, waitOpens, shown)
		}
		if waitOpens && nh.NextIn > 5*time.Minute {
			t.Fatalf("next hint opens in %s; the 10m gate is 5m away", nh.NextIn)
		}
	}
	answer := func(check, value string) {
		t.Helper()
		if err := in.Answer(check, value); err != nil {
			t.Fatal(err)
		}
	}

	// q1 passes, so its hint stays closed; the 10m gate has not opened.
	answer("q1", "a")
	next("ungated")
	next("timed")
	none(true, 2)

	// q1 fails now: its hint opens.
	answer("q1", "wrong")
	next("while q1 fails")
	none(true, 3)

	// Past 10 minutes, the last hint still waits for q2 to fail.
	in.Created = time.Now().Add(-11 * time.Minute)
	answer("q2", "b")
	none(false, 3)
	answer("q2", "wrong")
	next("late, while q2 fails")
	none(false, 4)

	// Every hint shown was recorded, in order.
	events, err := in.Events()
	if err != nil {
		t.Fatal(err)
	}
	var order []int
	for _, e := range events {
		if e.Kind == EventHint {
			order = append(order, int(e.Data["index"].(float64)))
		}
	}
	if want := []int{0, 1, 2, 3}; !slices.Equal(order, want) {
		t.Fatalf("hint events %v, want %v", order, want)
	}
}
