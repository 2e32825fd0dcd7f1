package upnp

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
)

// Report reasons, used as Kubernetes Event reasons by the caller.
const (
	// ReasonMapped (normal): the owner's ports are forwarded; the message
	// names the gateway's external address.
	ReasonMapped = "UPnPMapped"
	// ReasonUnmapped (normal): some of the owner's ports are no longer
	// forwarded because the owner no longer asks for them.
	ReasonUnmapped = "UPnPUnmapped"
	// ReasonFailed (warning): the gateway is missing or refused; retried
	// with backoff.
	ReasonFailed = "UPnPFailed"
)

// Reporter receives what happened to an owner's mappings.
type Reporter interface {
	Report(owner string, warning bool, reason, message string)
}

// ReporterFunc adapts a function to Reporter.
type ReporterFunc func(owner string, warning bool, reason, message string)

// Report calls f.
func (f ReporterFunc) Report(owner string, warning bool, reason, message string) {
	f(owner, warning, reason, message)
}

// Options configure a Mapper.
type Options struct {
	// Discover finds the gateway (required; see SSDP).
	Discover Discoverer
	// Description prefixes each mapping's description (default "vip").
	Description string
	// RefreshPermanent is how often permanent mappings are added again
	// (default 30 min).
	RefreshPermanent time.Duration
	// RetryMin and RetryMax bound the exponential backoff after a failure
	// (defaults 1 s and 2 min).
	RetryMin, RetryMax time.Duration
	// CallTimeout bounds one discovery or SOAP call (default 10 s).
	CallTimeout time.Duration
	// StopTimeout bounds the removal of every mapping when Run ends
	// (default 5 s).
	StopTimeout time.Duration
	Reporter    Reporter
	Logger      logr.Logger
	Registerer  prometheus.Registerer
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// ErrInvalidOptions marks unusable Options.
var ErrInvalidOptions = errors.New("invalid UPnP options")

// Mapper keeps the wanted mappings on the gateway. Set and Delete may be
// called from any goroutine; all gateway calls happen in Run's goroutine.
type Mapper struct {
	o       Options
	log     logr.Logger
	metrics *metrics
	wake    chan struct{}
	exited  chan struct{} // closed when Run returns

	mu   sync.Mutex
	want map[string]Want
	held map[ID]Held
	// Steps started and finished, and a channel closed (and replaced) when
	// a step finishes: Flush waits on them.
	started, finished uint64
	stepped           chan struct{}

	// Run's goroutine only.
	gw            Gateway
	gwName        string
	ext           netip.Addr
	permanentOnly bool
	gwRetry       retry
	retries       map[string]*retry
	reported      map[string]string // owner -> last Mapped message
	conflicts     map[string]string // owner -> last conflict message
}

type retry struct {
	n    int
	next time.Time
	last string // last warning message (reported once)
	err  error  // the failure (gateway discovery)
}

// New returns a Mapper; Run starts it.
func New(o Options) (*Mapper, error) {
	if o.Discover == nil {
		return nil, fmt.Errorf("%w: no Discover function", ErrInvalidOptions)
	}
	if o.Description == "" {
		o.Description = "vip"
	}
	if o.RefreshPermanent <= 0 {
		o.RefreshPermanent = 30 * time.Minute
	}
	if o.RetryMin <= 0 {
		o.RetryMin = time.Second
	}
	if o.RetryMax < o.RetryMin {
		o.RetryMax = max(o.RetryMin, 2*time.Minute)
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = 10 * time.Second
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = 5 * time.Second
	}
	if o.Reporter == nil {
		o.Reporter = ReporterFunc(func(string, bool, string, string) {})
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Mapper{
		o: o, log: o.Logger, metrics: newMetrics(o.Registerer),
		wake: make(chan struct{}, 1), exited: make(chan struct{}), stepped: make(chan struct{}),
		want: map[string]Want{}, held: map[ID]Held{},
		retries: map[string]*retry{}, reported: map[string]string{}, conflicts: map[string]string{},
	}, nil
}

// Set replaces what owner wants forwarded (no mappings = none).
func (m *Mapper) Set(owner string, w Want) {
	m.mu.Lock()
	old, had := m.want[owner]
	if len(w.Mappings) == 0 {
		delete(m.want, owner)
	} else {
		w.Mappings = slices.Clone(w.Mappings)
		m.want[owner] = w
	}
	same := had == (len(w.Mappings) > 0) && old.Lease == w.Lease && slices.Equal(old.Mappings, w.Mappings)
	holds := false
	for _, h := range m.held {
		if h.Owner == owner {
			holds = true
			break
		}
	}
	m.mu.Unlock()
	if same || (!had && len(w.Mappings) == 0 && !holds) {
		return
	}
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// Delete forgets owner; its mappings are removed.
func (m *Mapper) Delete(owner string) { m.Set(owner, Want{}) }

// Flush waits until Run has acted on what owner wants now (after Set): it
// returns once owner holds no mapping or a step begun after the call has
// finished (the calls may have failed), when ctx ends, or when Run has
// returned. A node handing a Service over calls it so that its deletion
// cannot reach the gateway after the next owner's addition.
func (m *Mapper) Flush(ctx context.Context, owner string) {
	m.mu.Lock()
	target := m.started + 1
	m.mu.Unlock()
	for {
		m.mu.Lock()
		holds := false
		for _, h := range m.held {
			holds = holds || h.Owner == owner
		}
		_, wants := m.want[owner]
		done := m.finished >= target || (!holds && !wants)
		ch := m.stepped
		m.mu.Unlock()
		if done {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		case <-m.exited:
			return
		}
	}
}

// Held returns the mappings held on the gateway, ordered by ID.
func (m *Mapper) Held() []Held {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := slices.Collect(maps.Values(m.held))
	slices.SortFunc(out, func(a, b Held) int { return a.ID.compare(b.ID) })
	return out
}

// Run keeps the gateway in line with what is wanted until ctx ends, then
// removes every mapping it holds (within StopTimeout) and returns.
func (m *Mapper) Run(ctx context.Context) error {
	defer close(m.exited)
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		m.mu.Lock()
		m.started++
		n := m.started
		m.mu.Unlock()
		m.step(ctx)
		m.mu.Lock()
		m.finished = n
		close(m.stepped)
		m.stepped = make(chan struct{})
		m.mu.Unlock()
		t.Reset(m.nextWake())
		select {
		case <-ctx.Done():
			m.removeAll()
			return nil
		case <-m.wake:
		case <-t.C:
		}
	}
}

// nextWake is how long until a renewal or a retry is due (an hour when
// nothing is).
func (m *Mapper) nextWake() time.Duration {
	now := m.o.Now()
	m.mu.Lock()
	next := NextRenewal(m.held)
	m.mu.Unlock()
	for _, r := range m.retries {
		if r.n > 0 && (next.IsZero() || r.next.Before(next)) {
			next = r.next
		}
	}
	if m.gw == nil && m.gwRetry.n > 0 && (next.IsZero() || m.gwRetry.next.Before(next)) {
		next = m.gwRetry.next
	}
	if next.IsZero() {
		return time.Hour
	}
	return max(next.Sub(now), time.Millisecond)
}

func (m *Mapper) step(ctx context.Context) {
	now := m.o.Now()
	m.mu.Lock()
	want := maps.Clone(m.want)
	held := maps.Clone(m.held)
	m.mu.Unlock()
	ops, conflicts := Plan(want, held, now)
	m.reportConflicts(conflicts)
	ops = slices.DeleteFunc(ops, func(op Op) bool {
		r := m.retries[op.Owner]
		return r != nil && r.n > 0 && now.Before(r.next)
	})
	if len(ops) == 0 {
		return
	}
	if m.gw == nil {
		if m.gwRetry.n > 0 && now.Before(m.gwRetry.next) {
			return
		}
		if !m.discover(ctx) {
			for _, op := range ops {
				if op.Kind != OpDelete {
					m.warn(op.Owner, m.gwRetry.err, now, true)
				}
			}
			return
		}
	}
	added := map[string]bool{}
	removed := map[string][]ID{}
	renewed := false
	for _, op := range ops {
		if ctx.Err() != nil {
			return
		}
		err := m.apply(ctx, op, now)
		if err == nil {
			if r := m.retries[op.Owner]; r != nil && r.n > 0 && op.Kind != OpDelete {
				added[op.Owner] = true // recovered: say so
			}
			m.succeeded(op.Owner)
			if op.Kind == OpDelete {
				removed[op.Owner] = append(removed[op.Owner], op.ID)
			} else if op.Kind == OpAdd {
				added[op.Owner] = true
			} else {
				renewed = true
			}
			continue
		}
		m.log.Info("UPnP call failed", "op", op.Kind.String(), "owner", op.Owner, "mapping", op.Mapping.String(), "gateway", m.gw.String(), "err", err)
		m.warn(op.Owner, fmt.Errorf("%s %s on %s: %w", op.Kind, op.Mapping, m.gw, err), now, true)
		if errors.Is(err, ErrUnreachable) {
			m.gw = nil
			break
		}
	}
	m.setHeldMetric()
	m.report(ctx, want, added, removed, renewed)
}

// apply makes one gateway call and updates the held set.
func (m *Mapper) apply(ctx context.Context, op Op, now time.Time) error {
	cctx, cancel := context.WithTimeout(ctx, m.o.CallTimeout)
	defer cancel()
	name := op.Kind.String()
	if op.Kind == OpDelete {
		err := m.gw.DeletePortMapping(cctx, op.Mapping)
		m.metrics.call(name, err)
		if err != nil && !errors.Is(err, ErrNoSuchEntry) {
			return err
		}
		m.mu.Lock()
		delete(m.held, op.ID)
		m.mu.Unlock()
		return nil
	}
	lease := op.Lease
	if m.permanentOnly {
		lease = 0
	}
	desc := m.o.Description + " " + op.Owner
	err := m.gw.AddPortMapping(cctx, op.Mapping, lease, desc)
	if errors.Is(err, ErrPermanentOnly) && lease > 0 {
		m.log.Info("gateway accepts only permanent mappings; using lease 0 and refreshing them", "gateway", m.gw.String(), "refresh", m.o.RefreshPermanent)
		m.permanentOnly, lease = true, 0
		err = m.gw.AddPortMapping(cctx, op.Mapping, 0, desc)
	}
	m.metrics.call(name, err)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.held[op.ID] = Held{Owner: op.Owner, Mapping: op.Mapping, Lease: lease, Asked: op.Lease,
		RenewAt: RenewAt(now, lease, m.o.RefreshPermanent)}
	m.mu.Unlock()
	if op.Kind == OpAdd {
		m.log.Info("port mapped", "owner", op.Owner, "mapping", op.Mapping.String(), "lease", lease, "gateway", m.gw.String())
	}
	return nil
}

func (m *Mapper) discover(ctx context.Context) bool {
	dctx, cancel := context.WithTimeout(ctx, m.o.CallTimeout)
	defer cancel()
	gw, err := m.o.Discover(dctx)
	m.metrics.call("discover", err)
	if err != nil {
		m.gwRetry.fail(m.o.Now(), m.o.RetryMin, m.o.RetryMax)
		m.gwRetry.err = err
		m.log.Info("no UPnP gateway; retrying", "err", err, "retryIn", m.gwRetry.next.Sub(m.o.Now()).Round(time.Millisecond))
		return false
	}
	m.gw, m.gwName, m.gwRetry, m.permanentOnly = gw, gw.String(), retry{}, false
	m.log.Info("UPnP gateway found", "gateway", gw.String())
	// The gateway may be a new one, or have restarted without its
	// mappings: every held mapping is added again now.
	now := m.o.Now()
	m.mu.Lock()
	for id, h := range m.held {
		h.RenewAt = now
		m.held[id] = h
	}
	m.mu.Unlock()
	return true
}

// removeAll deletes every held mapping (graceful stop).
func (m *Mapper) removeAll() {
	held := m.Held()
	if len(held) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.o.StopTimeout)
	defer cancel()
	if m.gw == nil && !m.discover(ctx) {
		m.log.Info("cannot remove port mappings: no gateway; they expire with their lease", "mappings", len(held))
		return
	}
	n := 0
	for _, h := range held {
		if err := m.apply(ctx, Op{Kind: OpDelete, Owner: h.Owner, Mapping: h.Mapping}, m.o.Now()); err != nil {
			m.log.Info("removing port mapping", "mapping", h.Mapping.String(), "owner", h.Owner, "err", err)
			if errors.Is(err, ErrUnreachable) {
				break
			}
			continue
		}
		n++
	}
	m.setHeldMetric()
	m.log.Info("port mappings removed", "removed", n, "of", len(held), "gateway", m.gwName)
}

func (m *Mapper) setHeldMetric() {
	m.mu.Lock()
	n := len(m.held)
	m.mu.Unlock()
	m.metrics.mappings.Set(float64(n))
}
