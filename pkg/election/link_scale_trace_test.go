package election

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
)

// scaleTrace records, while armed, when the scale benchmark's nodes log
// the steps of a failover (suspicion, death, liveness change, Lease
// acquired, ticks judged as behind), so that each run can say where the
// time between the crash and the takeover went. Disarmed it costs one
// atomic load per log call that would be made anyway.
type scaleTrace struct {
	armed atomic.Bool
	mu    sync.Mutex
	ev    []traceEvent
}

// traceEvent is one recorded log line.
type traceEvent struct {
	at      time.Time
	on, msg string
	kv      map[string]any
}

// logger returns a logger for node on.
func (tr *scaleTrace) logger(on string) logr.Logger {
	return logr.New(traceSink{tr: tr, on: on})
}

// take returns the recorded events and forgets them.
func (tr *scaleTrace) take() []traceEvent {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	ev := tr.ev
	tr.ev = nil
	return ev
}

// traceSink is a logr.LogSink feeding a scaleTrace.
type traceSink struct {
	tr *scaleTrace
	on string
	kv []any
}

func (s traceSink) Init(logr.RuntimeInfo) {}

func (s traceSink) Enabled(level int) bool { return level <= 2 && s.tr.armed.Load() }

func (s traceSink) Info(_ int, msg string, kv ...any) {
	at := time.Now()
	m := map[string]any{}
	all := append(slices.Clone(s.kv), kv...)
	for i := 0; i+1 < len(all); i += 2 {
		if k, ok := all[i].(string); ok {
			m[k] = all[i+1]
		}
	}
	s.tr.mu.Lock()
	s.tr.ev = append(s.tr.ev, traceEvent{at: at, on: s.on, msg: msg, kv: m})
	s.tr.mu.Unlock()
}

func (s traceSink) Error(error, string, ...any) {}

func (s traceSink) WithValues(kv ...any) logr.LogSink {
	s.kv = append(slices.Clone(s.kv), kv...)
	return s
}

func (s traceSink) WithName(string) logr.LogSink { return s }

// Messages the trace summarises (the monitor's and the Elector's).
const (
	traceSuspect  = "peer silent on the link: asking the others"
	traceDead     = "peer silent on the link and nobody heard it since: dead"
	traceBehind   = "this node's liveness loop ran late or has unread heartbeats: judging nobody at this tick"
	traceChanged  = "node liveness changed"
	traceAcquired = "lease acquired"
)

// summary says, for one crash of victim at died, when the first
// suspicion, the first death declaration, the first and median liveness
// change and the first and last Lease acquisitions happened (ms after the
// crash), and how many ticks the observers judged as behind (late /
// backlog) between the crash and their declaration.
func traceSummary(ev []traceEvent, victim string, died time.Time) string {
	ms := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return fmt.Sprintf("%d", t.Sub(died).Milliseconds())
	}
	var firstSuspect, firstDead, firstAcq, lastAcq time.Time
	observers := map[string]time.Time{} // observer -> when it declared
	suspecters := map[string]bool{}
	var changes []time.Time
	acquired := 0
	successors := map[string]bool{}
	for _, e := range ev {
		if e.at.Before(died) {
			continue
		}
		switch e.msg {
		case traceSuspect:
			if e.kv["node"] == victim {
				suspecters[e.on] = true
				if firstSuspect.IsZero() {
					firstSuspect = e.at
				}
			}
		case traceDead:
			if e.kv["node"] == victim {
				observers[e.on] = e.at
				if firstDead.IsZero() {
					firstDead = e.at
				}
			}
		case traceChanged:
			if e.kv["node"] == victim && e.kv["alive"] == false {
				changes = append(changes, e.at)
			}
		case traceAcquired:
			acquired++
			successors[e.on] = true
			if firstAcq.IsZero() {
				firstAcq = e.at
			}
			lastAcq = e.at
		}
	}
	late, backlog := 0, 0
	for _, e := range ev {
		if e.msg != traceBehind || !suspecters[e.on] || e.at.Before(died) {
			continue
		}
		if at, ok := observers[e.on]; ok && e.at.After(at) {
			continue
		}
		if b, _ := e.kv["backlog"].(bool); b {
			backlog++
		} else {
			late++
		}
	}
	var succChange time.Time
	for _, e := range ev {
		if e.msg == traceChanged && successors[e.on] && e.kv["node"] == victim && !e.at.Before(died) &&
			(succChange.IsZero() || e.at.Before(succChange)) {
			succChange = e.at
		}
	}
	slices.SortFunc(changes, func(a, b time.Time) int { return a.Compare(b) })
	var firstChange, medChange time.Time
	if len(changes) > 0 {
		firstChange, medChange = changes[0], changes[len(changes)/2]
	}
	return fmt.Sprintf("ms after the crash: first suspicion %s (%d observers), first death %s (%d declared), liveness change first %s median %s (%d nodes) at the successor %s, Lease acquired first %s last %s (%d); observers' ticks judged behind before declaring: %d late, %d backlog",
		ms(firstSuspect), len(suspecters), ms(firstDead), len(observers), ms(firstChange), ms(medChange), len(changes), ms(succChange),
		ms(firstAcq), ms(lastAcq), acquired, late, backlog)
}
