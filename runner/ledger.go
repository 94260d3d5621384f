package runner

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
)

// Ledger operations.
const (
	opCreate = "create" // the resource is about to exist
	opUpdate = "update" // new data for an earlier create (e.g. a fault's state)
	opGone   = "gone"   // the resource no longer exists
)

// record is one ledger line.
type record struct {
	Seq  int             `json:"seq"`
	Op   string          `json:"op"`
	Kind string          `json:"kind,omitempty"`
	Name string          `json:"name,omitempty"`
	Ref  int             `json:"ref,omitempty"` // the create an update or gone is about
	Data json.RawMessage `json:"data,omitempty"`
}

// ledger is the instance's write-ahead log of resources. Every append is
// synced before the caller goes on to create the resource.
type ledger struct {
	mu   sync.Mutex
	path string
	f    *os.File
	seq  int
}

// ledgerAppended is a seam for the crash tests (set in a _test.go file):
// it runs after each record is durable.
var ledgerAppended = func(seq int) {}

func openLedger(path string) (*ledger, error) {
	recs, err := readLedger(path)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	l := &ledger{path: path, f: f}
	if n := len(recs); n > 0 {
		l.seq = recs[n-1].Seq
	}
	if err := l.terminateTornLine(); err != nil {
		f.Close()
		return nil, err
	}
	return l, nil
}

// terminateTornLine ends a half-written last line (a crash mid-append)
// so the next record starts on a line of its own.
func (l *ledger) terminateTornLine() error {
	data, err := os.ReadFile(l.path)
	if err != nil || len(data) == 0 || data[len(data)-1] == '\n' {
		return err
	}
	_, err = l.f.Write([]byte{'\n'})
	return err
}

func (l *ledger) close() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

func (l *ledger) append(r record) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return 0, errors.New("ledger is closed")
	}
	l.seq++
	r.Seq = l.seq
	line, err := json.Marshal(r)
	if err != nil {
		return 0, fmt.Errorf("ledger: encode %s %s: %w", r.Kind, r.Name, err)
	}
	if _, err := l.f.Write(append(line, '\n')); err != nil {
		return 0, fmt.Errorf("ledger: append %s %s: %w", r.Kind, r.Name, err)
	}
	if err := l.f.Sync(); err != nil {
		return 0, fmt.Errorf("ledger: sync: %w", err)
	}
	ledgerAppended(r.Seq)
	return r.Seq, nil
}

// create records a resource before it is created and returns its seq.
func (l *ledger) create(kind, name string, data any) (int, error) {
	raw, err := marshalData(data)
	if err != nil {
		return 0, fmt.Errorf("ledger: %s %s: %w", kind, name, err)
	}
	return l.append(record{Op: opCreate, Kind: kind, Name: name, Data: raw})
}

func (l *ledger) update(ref int, data any) error {
	raw, err := marshalData(data)
	if err != nil {
		return err
	}
	_, err = l.append(record{Op: opUpdate, Ref: ref, Data: raw})
	return err
}

func (l *ledger) gone(ref int) error {
	_, err := l.append(record{Op: opGone, Ref: ref})
	return err
}

func marshalData(data any) (json.RawMessage, error) {
	switch d := data.(type) {
	case nil:
		return nil, nil
	case json.RawMessage:
		return d, nil
	}
	return json.Marshal(data)
}

// readLedger returns the records of a ledger file; lines that do not
// decode (a torn last line) are skipped.
func readLedger(path string) ([]record, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read ledger: %w", err)
	}
	var out []record
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var r record
		if json.Unmarshal(sc.Bytes(), &r) != nil || r.Seq == 0 {
			continue
		}
		out = append(out, r)
	}
	return out, sc.Err()
}

// liveResources folds a ledger into the resources not yet gone, in
// creation order, each with its latest data.
func liveResources(recs []record) []record {
	var order []int
	live := map[int]*record{}
	for _, r := range recs {
		switch r.Op {
		case opCreate:
			c := r
			live[r.Seq] = &c
			order = append(order, r.Seq)
		case opUpdate:
			if c, ok := live[r.Ref]; ok {
				c.Data = r.Data
			}
		case opGone:
			delete(live, r.Ref)
		}
	}
	var out []record
	for _, seq := range order {
		if c, ok := live[seq]; ok {
			out = append(out, *c)
		}
	}
	return out
}
