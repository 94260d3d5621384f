package runner

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// Event is one line of events.jsonl: what happened to the instance, when.
type Event struct {
	Time time.Time      `json:"time"`
	Kind string         `json:"kind"`
	Data map[string]any `json:"data,omitempty"`
}

// eventLine is Event as written: RFC 3339 with nanoseconds.
type eventLine struct {
	Time string         `json:"time"`
	Kind string         `json:"kind"`
	Data map[string]any `json:"data,omitempty"`
}

// RecordEvent appends an event (up, down, answer, hint, check...).
func (in *Instance) RecordEvent(kind string, data map[string]any) error {
	line, err := json.Marshal(eventLine{Time: time.Now().UTC().Format(time.RFC3339Nano), Kind: kind, Data: data})
	if err != nil {
		return fmt.Errorf("record event %s: %w", kind, err)
	}
	f, err := os.OpenFile(filepath.Join(in.Dir, eventsFile), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("record event %s: %w", kind, err)
	}
	defer f.Close()
	// One write call per line: O_APPEND keeps concurrent writers' lines whole.
	if _, err := f.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("record event %s: %w", kind, err)
	}
	return nil
}

// Events returns the recorded events in order; a torn last line is skipped.
func (in *Instance) Events() ([]Event, error) {
	f, err := os.Open(filepath.Join(in.Dir, eventsFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Event
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var l eventLine
		if json.Unmarshal(sc.Bytes(), &l) != nil {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, l.Time)
		if err != nil {
			continue
		}
		out = append(out, Event{Time: t, Kind: l.Kind, Data: l.Data})
	}
	return out, sc.Err()
}

// SetMark records a value for "since" probes (e.g. a counter at up).
func (in *Instance) SetMark(key, value string) error {
	lock, err := lockPath(filepath.Join(in.Dir, marksFile+".lock"))
	if err != nil {
		return err
	}
	defer lock.Close()
	marks := in.readMarks()
	marks[key] = value
	return writeJSON(filepath.Join(in.Dir, marksFile), marks)
}

// Mark returns a value recorded with SetMark.
func (in *Instance) Mark(key string) (string, bool) {
	v, ok := in.readMarks()[key]
	return v, ok
}

func (in *Instance) readMarks() map[string]string {
	marks := map[string]string{}
	if data, err := os.ReadFile(filepath.Join(in.Dir, marksFile)); err == nil {
		_ = json.Unmarshal(data, &marks) // written atomically; unreadable means none
	}
	return marks
}
