package upnp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fakeGateway records calls and holds mappings like an IGD would.
type fakeGateway struct {
	mu            sync.Mutex
	calls         []string
	table         map[ID]fakeEntry
	permanentOnly bool
	fail          error      // returned by every call while set
	ext           netip.Addr // external address (default 10.200.0.1)
}

type fakeEntry struct {
	vip   netip.Addr
	lease time.Duration
}

func newFakeGateway() *fakeGateway { return &fakeGateway{table: map[ID]fakeEntry{}} }

func (g *fakeGateway) String() string { return "fake IGD" }

func (g *fakeGateway) AddPortMapping(_ context.Context, m Mapping, lease time.Duration, _ string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.calls = append(g.calls, fmt.Sprintf("add %s %v", m, lease))
	switch {
	case g.fail != nil:
		return g.fail
	case g.permanentOnly && lease != 0:
		return fmt.Errorf("%w (UPnP error 725 OnlyPermanentLeasesSupported)", ErrPermanentOnly)
	}
	if e, ok := g.table[m.ID]; ok && e.vip != m.VIP {
		return fmt.Errorf("%w (UPnP error 718 ConflictInMappingEntry)", ErrConflict)
	}
	g.table[m.ID] = fakeEntry{m.VIP, lease}
	return nil
}

func (g *fakeGateway) DeletePortMapping(_ context.Context, m Mapping) error {
	id := m.ID
	g.mu.Lock()
	defer g.mu.Unlock()
	g.calls = append(g.calls, "delete "+id.String())
	if g.fail != nil {
		return g.fail
	}
	if _, ok := g.table[id]; !ok {
		return ErrNoSuchEntry
	}
	delete(g.table, id)
	return nil
}

func (g *fakeGateway) ExternalAddress(context.Context) (netip.Addr, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.fail != nil {
		return netip.Addr{}, g.fail
	}
	if g.ext.IsValid() {
		return g.ext, nil
	}
	return netip.MustParseAddr("10.200.0.1"), nil
}

func (g *fakeGateway) takeCalls() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	c := g.calls
	g.calls = nil
	return c
}

func (g *fakeGateway) entries() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []string
	for id, e := range g.table {
		out = append(out, fmt.Sprintf("%s→%s %v", id, e.vip, e.lease))
	}
	slices.Sort(out)
	return out
}

type report struct {
	owner   string
	warning bool
	reason  string
	msg     string
}

type harness struct {
	t        *testing.T
	gw       *fakeGateway
	now      time.Time
	discover int
	noGW     error // discovery fails with it while set
	m        *Mapper
	reg      *prometheus.Registry
	mu       sync.Mutex
	reports  []report
}

func newHarness(t *testing.T) *harness {
	h := &harness{t: t, gw: newFakeGateway(), now: t0, reg: prometheus.NewRegistry()}
	m, err := New(Options{
		Discover: func(context.Context) (Gateway, error) {
			h.discover++
			if h.noGW != nil {
				return nil, h.noGW
			}
			return h.gw, nil
		},
		RetryMin: time.Second, RetryMax: 8 * time.Second, RefreshPermanent: 10 * time.Minute,
		Reporter: ReporterFunc(func(o string, w bool, r, msg string) {
			h.mu.Lock()
			h.reports = append(h.reports, report{o, w, r, msg})
			h.mu.Unlock()
		}),
		Registerer: h.reg,
		Now:        func() time.Time { return h.now },
	})
	if err != nil {
		t.Fatal(err)
	}
	h.m = m
	return h
}

func (h *harness) step()                   { h.m.step(context.Background()) }
func (h *harness) advance(d time.Duration) { h.now = h.now.Add(d) }

func (h *harness) takeReports() []report {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.reports
	h.reports = nil
	return r
}

func (h *harness) wantEntries(want ...string) {
	h.t.Helper()
	if got := h.gw.entries(); !slices.Equal(got, want) {
		h.t.Fatalf("gateway table:\n got %q\nwant %q", got, want)
	}
}

func (h *harness) wantCalls(want ...string) {
	h.t.Helper()
	if got := h.gw.takeCalls(); !slices.Equal(got, want) {
		h.t.Fatalf("gateway calls:\n got %q\nwant %q", got, want)
	}
}

func TestMapperAddRenewRemove(t *testing.T) {
	h := newHarness(t)
	h.m.Set("ns/a", Want{Lease: time.Minute, Mappings: []Mapping{mp(TCP, 80, vipA), mp(TCP, 81, vipA)}})
	h.step()
	h.wantCalls("add TCP/80→10.77.0.200 1m0s", "add TCP/81→10.77.0.200 1m0s")
	h.wantEntries("TCP/80→10.77.0.200 1m0s", "TCP/81→10.77.0.200 1m0s")
	rs := h.takeReports()
	if len(rs) != 1 || rs[0].warning || rs[0].reason != ReasonMapped || !strings.Contains(rs[0].msg, "external address 10.200.0.1") ||
		!strings.Contains(rs[0].msg, "TCP/80 to 10.77.0.200, TCP/81 to 10.77.0.200") {
		t.Fatalf("reports after mapping: %+v", rs)
	}
	if w := h.m.nextWake(); w != 30*time.Second {
		t.Errorf("next wake %v, want 30s (half the lease)", w)
	}
	if v := testutil.ToFloat64(h.m.metrics.mappings); v != 2 {
		t.Errorf("mappings gauge %v, want 2", v)
	}

	h.advance(29 * time.Second)
	h.step()
	h.wantCalls() // not due yet
	h.advance(time.Second)
	h.step()
	h.wantCalls("add TCP/80→10.77.0.200 1m0s", "add TCP/81→10.77.0.200 1m0s") // a renewal adds again
	if rs := h.takeReports(); len(rs) != 0 {
		t.Errorf("a renewal reported %+v; only changes are reported", rs)
	}

	// A port goes: its mapping only.
	h.m.Set("ns/a", Want{Lease: time.Minute, Mappings: []Mapping{mp(TCP, 80, vipA)}})
	h.step()
	h.wantCalls("delete TCP/81")
	h.wantEntries("TCP/80→10.77.0.200 1m0s")
	rs = h.takeReports()
	if len(rs) != 2 || rs[0].reason != ReasonUnmapped || !strings.Contains(rs[0].msg, "TCP/81") || rs[1].reason != ReasonMapped {
		t.Fatalf("reports after removing a port: %+v", rs)
	}

	// The Service goes: nothing reported (there is nothing to report on).
	h.m.Delete("ns/a")
	h.step()
	h.wantCalls("delete TCP/80")
	h.wantEntries()
	if rs := h.takeReports(); len(rs) != 0 {
		t.Errorf("reports after delete: %+v", rs)
	}
	if h.discover != 1 {
		t.Errorf("discovered %d times, want 1", h.discover)
	}
}

// A new external address (the provider re-addressed the line) is noticed at
// the next renewal and reported for every Service.
func TestMapperExternalAddressChange(t *testing.T) {
	h := newHarness(t)
	h.m.Set("ns/a", Want{Lease: time.Minute, Mappings: []Mapping{mp(TCP, 80, vipA)}})
	h.m.Set("ns/b", Want{Lease: time.Minute, Mappings: []Mapping{mp(UDP, 53, vipB)}})
	h.step()
	if rs := h.takeReports(); len(rs) != 2 {
		t.Fatalf("reports: %+v", rs)
	}
	h.gw.mu.Lock()
	h.gw.ext = netip.MustParseAddr("10.200.9.9")
	h.gw.mu.Unlock()
	h.advance(30 * time.Second)
	h.step()
	rs := h.takeReports()
	if len(rs) != 2 {
		t.Fatalf("reports after the address changed: %+v", rs)
	}
	for _, r := range rs {
		if r.reason != ReasonMapped || !strings.Contains(r.msg, "external address 10.200.9.9") {
			t.Errorf("report %+v", r)
		}
	}
	h.advance(30 * time.Second)
	h.step()
	if rs := h.takeReports(); len(rs) != 0 {
		t.Errorf("unchanged address reported again: %+v", rs)
	}
}

// Some gateways accept only lease 0 (UPnP error 725): the mapping is made
// permanent and refreshed, and later additions go straight to lease 0.
func TestMapperPermanentOnlyFallback(t *testing.T) {
	h := newHarness(t)
	h.gw.permanentOnly = true
	h.m.Set("ns/a", Want{Lease: time.Hour, Mappings: []Mapping{mp(UDP, 53, vipA)}})
	h.step()
	h.wantCalls("add UDP/53→10.77.0.200 1h0m0s", "add UDP/53→10.77.0.200 0s")
	h.wantEntries("UDP/53→10.77.0.200 0s")
	if rs := h.takeReports(); len(rs) != 1 || rs[0].warning {
		t.Fatalf("reports: %+v", rs)
	}
	h.m.Set("ns/b", Want{Lease: time.Hour, Mappings: []Mapping{mp(TCP, 80, vipB)}})
	h.step()
	h.wantCalls("add TCP/80→10.77.0.201 0s")
	h.advance(10 * time.Minute)
	h.step()
	h.wantCalls("add TCP/80→10.77.0.201 0s", "add UDP/53→10.77.0.200 0s") // refreshed
}

// No gateway: one Warning per Service, retries with backoff, and the
// mapping appears once the gateway does.
func TestMapperNoGatewayBackoff(t *testing.T) {
	h := newHarness(t)
	h.noGW = fmt.Errorf("%w on eth0 (0 SSDP answers in 2s)", ErrNoGateway)
	h.m.Set("ns/a", Want{Lease: time.Minute, Mappings: []Mapping{mp(TCP, 80, vipA)}})
	h.step()
	rs := h.takeReports()
	if len(rs) != 1 || !rs[0].warning || rs[0].reason != ReasonFailed || !strings.Contains(rs[0].msg, "no UPnP Internet gateway found on eth0") {
		t.Fatalf("reports: %+v", rs)
	}
	var waits []time.Duration
	for range 5 {
		waits = append(waits, h.m.nextWake())
		h.step() // not due: no discovery
		h.advance(h.m.nextWake())
		h.step()
	}
	if want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second}; !slices.Equal(waits, want) {
		t.Errorf("backoff %v, want %v", waits, want)
	}
	if h.discover != 6 {
		t.Errorf("discovered %d times, want 6 (one per due retry)", h.discover)
	}
	if rs := h.takeReports(); len(rs) != 0 {
		t.Errorf("the same failure was reported again: %+v", rs)
	}
	if v := testutil.ToFloat64(h.m.metrics.failures.WithLabelValues("discover")); v != 6 {
		t.Errorf("discover failures %v, want 6", v)
	}
	h.noGW = nil
	h.advance(h.m.nextWake())
	h.step()
	h.wantEntries("TCP/80→10.77.0.200 1m0s")
	if rs := h.takeReports(); len(rs) != 1 || rs[0].reason != ReasonMapped {
		t.Fatalf("reports after recovery: %+v", rs)
	}
}

// A gateway that stops answering is rediscovered; the renewal is retried
// with backoff and reported once.
func TestMapperGatewayGoesAway(t *testing.T) {
	h := newHarness(t)
	h.m.Set("ns/a", Want{Lease: time.Minute, Mappings: []Mapping{mp(TCP, 80, vipA)}})
	h.step()
	h.takeReports()
	h.gw.takeCalls()
	h.gw.fail = fmt.Errorf("%w: connection refused", ErrUnreachable)
	h.advance(30 * time.Second)
	h.step()
	rs := h.takeReports()
	if len(rs) != 1 || !rs[0].warning || !strings.Contains(rs[0].msg, "renew TCP/80") || !strings.Contains(rs[0].msg, "connection refused") {
		t.Fatalf("reports: %+v", rs)
	}
	if h.m.gw != nil {
		t.Fatal("an unreachable gateway was kept")
	}
	h.gw.fail = nil
	h.advance(time.Second)
	h.step()
	if h.discover != 2 {
		t.Errorf("discovered %d times, want 2", h.discover)
	}
	h.wantCalls("add TCP/80→10.77.0.200 1m0s", "add TCP/80→10.77.0.200 1m0s") // failed, then retried
	if rs := h.takeReports(); len(rs) != 1 || rs[0].warning || rs[0].reason != ReasonMapped {
		t.Fatalf("recovery not reported as Mapped: %+v", rs)
	}
}

// A refused mapping (another host holds the port) is a Warning on that
// Service only; the other Service's mapping is made.
func TestMapperRefusedAffectsOnlyItsOwner(t *testing.T) {
	h := newHarness(t)
	h.gw.table[ID{TCP, 8080}] = fakeEntry{vip: netip.MustParseAddr("10.77.0.99")}
	h.m.Set("ns/a", Want{Lease: time.Minute, Mappings: []Mapping{mp(TCP, 8080, vipA)}})
	h.m.Set("ns/b", Want{Lease: time.Minute, Mappings: []Mapping{mp(TCP, 80, vipB)}})
	h.step()
	rs := h.takeReports()
	var warnA, mappedB bool
	for _, r := range rs {
		warnA = warnA || (r.owner == "ns/a" && r.warning && strings.Contains(r.msg, "718"))
		mappedB = mappedB || (r.owner == "ns/b" && r.reason == ReasonMapped)
	}
	if !warnA || !mappedB {
		t.Fatalf("reports: %+v", rs)
	}
	if got := h.m.Held(); len(got) != 1 || got[0].Owner != "ns/b" {
		t.Fatalf("held %+v", got)
	}
}

// Run removes every mapping when its context ends.
func TestMapperRunRemovesAllOnStop(t *testing.T) {
	h := newHarness(t)
	h.m.o.Now = time.Now
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.m.Run(ctx) }()
	h.m.Set("ns/a", Want{Lease: time.Hour, Mappings: []Mapping{mp(TCP, 80, vipA), mp(UDP, 53, vipA)}})
	h.m.Set("ns/b", Want{Lease: time.Hour, Mappings: []Mapping{mp(TCP, 443, vipB)}})
	deadline := time.Now().Add(time.Minute)
	for len(h.gw.entries()) < 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := len(h.gw.entries()); n != 3 {
		t.Fatalf("%d mappings made, want 3", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	h.wantEntries()
	if v := testutil.ToFloat64(h.m.metrics.mappings); v != 0 {
		t.Errorf("mappings gauge %v after stop", v)
	}
}

// Flush returns once the owner's mappings are gone from the gateway, so a
// node handing a Service over deletes before the next owner adds.
func TestMapperFlush(t *testing.T) {
	h := newHarness(t)
	h.m.o.Now = time.Now
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.m.Run(ctx) }()
	h.m.Flush(context.Background(), "ns/none") // nothing held or wanted: at once
	h.m.Set("ns/a", Want{Lease: time.Hour, Mappings: []Mapping{mp(TCP, 80, vipA)}})
	h.m.Flush(context.Background(), "ns/a")
	h.wantEntries("TCP/80→10.77.0.200 1h0m0s")
	h.m.Delete("ns/a")
	h.m.Flush(context.Background(), "ns/a")
	h.wantEntries()
	cancel()
	<-done
	h.m.Set("ns/b", Want{Lease: time.Hour, Mappings: []Mapping{mp(TCP, 81, vipA)}})
	fctx, fcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer fcancel()
	h.m.Flush(fctx, "ns/b") // Run has returned: at once
	if fctx.Err() != nil {
		t.Fatal("Flush waited for a Mapper that no longer runs")
	}
}

func TestNewRejectsMissingDiscover(t *testing.T) {
	if _, err := New(Options{}); !errors.Is(err, ErrInvalidOptions) {
		t.Fatalf("New without Discover: %v", err)
	}
}
