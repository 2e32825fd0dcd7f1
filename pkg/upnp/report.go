package upnp

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// report sends Mapped/Unmapped for owners whose mappings changed, and for
// every owner when the external address changed (read again with every
// change and every round of renewals).
func (m *Mapper) report(ctx context.Context, want map[string]Want, added map[string]bool, removed map[string][]ID, renewed bool) {
	if m.gw != nil && (len(added) > 0 || len(removed) > 0 || renewed || !m.ext.IsValid()) {
		cctx, cancel := context.WithTimeout(ctx, m.o.CallTimeout)
		ext, err := m.gw.ExternalAddress(cctx)
		cancel()
		m.metrics.call("external-address", err)
		switch {
		case err != nil:
			m.log.Info("reading the gateway's external address", "gateway", m.gw.String(), "err", err)
		case ext != m.ext:
			m.log.Info("gateway external address", "address", ext.String(), "gateway", m.gw.String())
			m.ext = ext
			for o := range want {
				added[o] = true
			}
		}
	}
	byOwner := map[string][]Held{}
	for _, h := range m.Held() {
		byOwner[h.Owner] = append(byOwner[h.Owner], h)
	}
	for o, ids := range removed {
		if _, still := want[o]; !still {
			delete(m.reported, o)
			continue
		}
		s := make([]string, len(ids))
		for i, id := range ids {
			s[i] = id.String()
		}
		m.o.Reporter.Report(o, false, ReasonUnmapped, fmt.Sprintf("Gateway no longer forwards %s", strings.Join(s, ",")))
		added[o] = true
	}
	for o := range added {
		hs := byOwner[o]
		if len(hs) == 0 {
			delete(m.reported, o)
			continue
		}
		s := make([]string, len(hs))
		for i, h := range hs {
			s[i] = h.ID.String() + " to " + h.VIP.String()
		}
		ext := "unknown (GetExternalIPAddress failed)"
		if m.ext.IsValid() {
			ext = m.ext.String()
		}
		msg := fmt.Sprintf("Gateway forwards %s; external address %s (%s)", strings.Join(s, ", "), ext, m.gwName)
		if m.reported[o] != msg {
			m.reported[o] = msg
			m.o.Reporter.Report(o, false, ReasonMapped, msg)
		}
	}
}

// reportConflicts warns owners that lost an external port to another
// owner, once per distinct message.
func (m *Mapper) reportConflicts(cs []Conflict) {
	msgs := map[string][]string{}
	for _, c := range cs {
		msgs[c.Owner] = append(msgs[c.Owner], fmt.Sprintf("%s (forwarded for %s)", c.ID, c.HeldBy))
	}
	for o := range m.conflicts {
		if _, ok := msgs[o]; !ok {
			delete(m.conflicts, o)
		}
	}
	for o, s := range msgs {
		msg := fmt.Sprintf("%v: external port %s", ErrConflict, strings.Join(s, ", "))
		if m.conflicts[o] != msg {
			m.conflicts[o] = msg
			m.o.Reporter.Report(o, true, ReasonFailed, msg)
		}
	}
}

// warn reports a failure once per distinct message; backoff, when set,
// delays the owner's next attempt.
func (m *Mapper) warn(owner string, err error, now time.Time, backoff bool) {
	r := m.retries[owner]
	if r == nil {
		r = &retry{}
		m.retries[owner] = r
	}
	if backoff {
		r.fail(now, m.o.RetryMin, m.o.RetryMax)
		delete(m.reported, owner) // the next success is reported again
	}
	msg := err.Error()
	if r.last == msg {
		return
	}
	r.last = msg
	if backoff {
		msg += fmt.Sprintf("; retrying in %v", r.next.Sub(now).Round(time.Millisecond))
	}
	m.o.Reporter.Report(owner, true, ReasonFailed, msg)
}

func (m *Mapper) succeeded(owner string) {
	delete(m.retries, owner)
}

func (r *retry) fail(now time.Time, lo, hi time.Duration) {
	r.n++
	d := lo
	for i := 1; i < r.n && d < hi; i++ {
		d *= 2
	}
	r.next = now.Add(min(d, hi))
}
