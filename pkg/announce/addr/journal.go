package addr

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
)

// The state file is a journal of JSON lines, one record per change:
//
//	{"op":"add","addr":"10.0.0.1","iface":"eth0"}
//	{"op":"del","addr":"10.0.0.1"}
//
// Each record is a single write(2) to a file opened with O_APPEND, so a
// process that crashes leaves whole records behind, and appending costs the
// same with 1 or 10000 addresses bound. Replaying the records gives the
// addresses that may still be bound. When the journal has grown well past the
// live set it is rewritten atomically (temporary file, then rename). Nothing
// is fsynced: the addresses themselves do not survive a reboot, and what a
// crashed process wrote stays in the page cache.

// Journal operations.
const (
	opAdd = "add"
	opDel = "del"
)

// record is one line of the journal.
type record struct {
	Op    string     `json:"op"`
	Addr  netip.Addr `json:"addr"`
	Iface string     `json:"iface,omitempty"`
}

// journal appends records to the state file.
type journal struct {
	path  string
	f     *os.File // append handle, opened on first write
	lines int      // records in the file
}

// readJournal replays path. It returns the addresses recorded as added and
// not removed, the number of records, and how many lines it could not parse.
// A missing file is empty.
func readJournal(path string) (live map[netip.Addr]string, lines, bad int, err error) {
	live = map[netip.Addr]string{}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return live, 0, 0, nil
	}
	if err != nil {
		return live, 0, 0, fmt.Errorf("reading state file: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		lines++
		var r record
		if json.Unmarshal(line, &r) != nil || !r.Addr.IsValid() {
			bad++
			continue
		}
		a := normalize(r.Addr)
		switch {
		case r.Op == opAdd && r.Iface != "":
			live[a] = r.Iface
		case r.Op == opDel:
			delete(live, a)
		default:
			bad++
		}
	}
	if err := sc.Err(); err != nil {
		return live, lines, bad, fmt.Errorf("reading state file: %w", err)
	}
	return live, lines, bad, nil
}

// append writes one record.
func (j *journal) append(r record) error {
	if j.f == nil {
		if err := os.MkdirAll(filepath.Dir(j.path), 0o755); err != nil {
			return fmt.Errorf("creating state directory: %w", err)
		}
		f, err := os.OpenFile(j.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return fmt.Errorf("opening state file: %w", err)
		}
		j.f = f
	}
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encoding state record: %w", err)
	}
	if _, err := j.f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("writing state file: %w", err)
	}
	j.lines++
	return nil
}

// rewrite replaces the journal atomically by one add record per live address.
func (j *journal) rewrite(live map[netip.Addr]string) error {
	recs := make([]record, 0, len(live))
	for a, iface := range live {
		recs = append(recs, record{Op: opAdd, Addr: a, Iface: iface})
	}
	slices.SortFunc(recs, func(x, y record) int { return x.Addr.Compare(y.Addr) })
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, r := range recs {
		if err := enc.Encode(r); err != nil {
			return fmt.Errorf("encoding state record: %w", err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(j.path), 0o755); err != nil {
		return fmt.Errorf("creating state directory: %w", err)
	}
	tmp := j.path + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("writing state file: %w", err)
	}
	if err := os.Rename(tmp, j.path); err != nil {
		return fmt.Errorf("replacing state file: %w", err)
	}
	// The old handle points at the replaced file; reopen on the next append.
	if j.f != nil {
		_ = j.f.Close()
		j.f = nil
	}
	j.lines = len(recs)
	return nil
}

// close releases the append handle.
func (j *journal) close() error {
	if j.f == nil {
		return nil
	}
	err := j.f.Close()
	j.f = nil
	return err
}
