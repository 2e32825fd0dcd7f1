package controlplane

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vip-lb/vip/pkg/announce/fake"
)

// eventually polls cond until it holds or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// switchProbe is a ProbeFunc whose answer the test sets.
type switchProbe struct {
	down  atomic.Bool
	calls atomic.Int64
}

func (p *switchProbe) probe(context.Context) error {
	p.calls.Add(1)
	if p.down.Load() {
		return errors.New("connection refused")
	}
	return nil
}

// dns is a ResolveFunc whose records the test sets.
type dns struct {
	mu    sync.Mutex
	addrs []netip.Addr
	err   error
	calls int
}

func (d *dns) set(err error, addrs ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.err, d.addrs = err, nil
	for _, a := range addrs {
		d.addrs = append(d.addrs, netip.MustParseAddr(a))
	}
}

// resolved returns the number of lookups so far.
func (d *dns) resolved() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.calls
}

// settled waits until the controller has looked the name up twice more:
// the answer set before the call has then been acted on (a positive
// barrier for checks that something did not happen).
func (d *dns) settled(t *testing.T) {
	t.Helper()
	n := d.resolved()
	eventually(t, time.Minute, "two more lookups", func() bool { return d.resolved() >= n+2 })
}

// probed waits until calls has grown by n: the controller has made n more
// probes, and acted on all but maybe the last.
func probed(t *testing.T, calls *atomic.Int64, n int64) {
	t.Helper()
	from := calls.Load()
	eventually(t, time.Minute, "more probes", func() bool { return calls.Load() >= from+n })
}

func (d *dns) resolve(_ context.Context, host string) ([]netip.Addr, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls++
	if host != "cp.example" {
		return nil, errors.New("no such host")
	}
	return append([]netip.Addr(nil), d.addrs...), d.err
}

func startController(t *testing.T, o Options) (*Controller, func()) {
	t.Helper()
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.Run(ctx)
	}()
	return c, func() { cancel(); <-done }
}

// held returns the addresses the fake announces for the control plane.
func held(a *fake.Announcer) []netip.Addr {
	var out []netip.Addr
	for _, v := range a.Held() {
		for _, o := range a.Owners(v) {
			if o == Owner {
				out = append(out, v)
			}
		}
	}
	return out
}

func TestEveryReadyNodeFollowsReadiness(t *testing.T) {
	ann := fake.New()
	p := &switchProbe{}
	p.down.Store(true)
	reg := prometheus.NewRegistry()
	c, stop := startController(t, Options{
		Identity: "node1", Address: "10.9.0.10", Interface: "eth0", Announcer: ann, EveryReadyNode: true,
		Probe: p.probe, ProbePeriod: 5 * time.Millisecond, Registerer: reg,
	})
	probed(t, &p.calls, 3)
	if len(held(ann)) != 0 {
		t.Fatal("announced while the API server is not ready")
	}
	p.down.Store(false)
	eventually(t, time.Minute, "announcement", func() bool { return c.Announced() == netip.MustParseAddr("10.9.0.10") })
	p.down.Store(true)
	eventually(t, time.Minute, "withdrawal", func() bool { return !c.Announced().IsValid() && len(held(ann)) == 0 })
	p.down.Store(false)
	eventually(t, time.Minute, "announcement again", func() bool { return len(held(ann)) == 1 })
	stop()
	if len(held(ann)) != 0 {
		t.Fatalf("still announced after Run returned: %v", ann.Held())
	}
	for _, call := range ann.Calls() {
		if call.Op == fake.OpAnnounce && call.Iface != "eth0" {
			t.Errorf("announced on %q", call.Iface)
		}
	}
}

func TestOneProbeFailureIsTolerated(t *testing.T) {
	ann := fake.New()
	var fails atomic.Int32
	var calls atomic.Int64
	probe := func(context.Context) error {
		calls.Add(1)
		if fails.Load() > 0 {
			fails.Add(-1)
			return errors.New("timeout")
		}
		return nil
	}
	c, stop := startController(t, Options{
		Identity: "node1", Address: "10.9.0.10", Announcer: ann, EveryReadyNode: true,
		Probe: probe, ProbePeriod: 5 * time.Millisecond, ProbeFailures: 2,
	})
	defer stop()
	eventually(t, time.Minute, "announcement", func() bool { return c.Announced().IsValid() })
	fails.Store(1)
	// The failed probe and two good ones after it were acted on.
	eventually(t, time.Minute, "the failed probe", func() bool { return fails.Load() == 0 })
	probed(t, &calls, 3)
	for _, call := range ann.Calls() {
		if call.Op == fake.OpWithdraw {
			t.Fatal("withdrew after a single failed probe")
		}
	}
}

func TestDNSAddressFollowsTheRecord(t *testing.T) {
	ann := fake.New()
	d := &dns{}
	d.set(errors.New("temporary failure"))
	c, stop := startController(t, Options{
		Identity: "node1", Address: "cp.example", Announcer: ann, EveryReadyNode: true,
		Probe: func(context.Context) error { return nil }, ProbePeriod: 5 * time.Millisecond,
		Resolve: d.resolve, ResolvePeriod: 20 * time.Millisecond,
	})
	defer stop()
	// Not resolvable yet: retried every second until it works.
	d.settled(t)
	if c.Announced().IsValid() {
		t.Fatal("announced before the name resolved")
	}
	d.set(nil, "fd00:9::10", "10.9.0.10", "10.9.0.11")
	eventually(t, time.Minute, "first IPv4 address", func() bool { return c.Announced() == netip.MustParseAddr("10.9.0.10") })

	// Round-robin order changes do not move the VIP.
	d.set(nil, "10.9.0.11", "10.9.0.10")
	d.settled(t)
	if got := c.Announced(); got != netip.MustParseAddr("10.9.0.10") {
		t.Fatalf("VIP moved to %v on a reordered answer", got)
	}
	// A failed lookup keeps the address.
	d.set(errors.New("SERVFAIL"))
	d.settled(t)
	if got := c.Announced(); got != netip.MustParseAddr("10.9.0.10") {
		t.Fatalf("VIP %v after a failed lookup", got)
	}
	// The record changes: the VIP follows, old one withdrawn first.
	d.set(nil, "10.9.0.12")
	eventually(t, time.Minute, "new address", func() bool { return c.Announced() == netip.MustParseAddr("10.9.0.12") })
	if h := held(ann); len(h) != 1 || h[0] != netip.MustParseAddr("10.9.0.12") {
		t.Fatalf("held %v, want only the new address", h)
	}
	// Unusable answers are ignored.
	d.set(nil, "127.0.0.1", "0.0.0.0")
	d.settled(t)
	if got := c.Announced(); got != netip.MustParseAddr("10.9.0.12") {
		t.Fatalf("VIP %v after an unusable answer", got)
	}
}

func TestFailedAnnouncementIsRetried(t *testing.T) {
	ann := fake.New()
	var fail atomic.Bool
	var failed atomic.Int64
	fail.Store(true)
	ann.Fail = func(op, _ string, _ netip.Addr) error {
		if op == fake.OpAnnounce && fail.Load() {
			failed.Add(1)
			return errors.New("no interface")
		}
		return nil
	}
	c, stop := startController(t, Options{
		Identity: "node1", Address: "10.9.0.10", Announcer: ann, EveryReadyNode: true,
		Probe: func(context.Context) error { return nil }, ProbePeriod: 5 * time.Millisecond,
	})
	defer stop()
	eventually(t, time.Minute, "a failed announcement", func() bool { return failed.Load() > 0 })
	fail.Store(false)
	eventually(t, time.Minute, "announcement after retry", func() bool { return c.Announced().IsValid() })
}

func TestOptions(t *testing.T) {
	base := Options{Identity: "n", Address: "10.0.0.1", Announcer: fake.New(), EveryReadyNode: true, Probe: func(context.Context) error { return nil }}
	if _, err := New(base); err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]func(*Options){
		"no identity":         func(o *Options) { o.Identity = "" },
		"no address":          func(o *Options) { o.Address = "" },
		"loopback":            func(o *Options) { o.Address = "127.0.0.1" },
		"no announcer":        func(o *Options) { o.Announcer = nil },
		"renew >= duration":   func(o *Options) { o.LeaseDuration, o.RenewDeadline = time.Second, time.Second },
		"retry >= renew":      func(o *Options) { o.RenewDeadline, o.RetryPeriod = time.Second, time.Second },
		"election, no client": func(o *Options) { o.EveryReadyNode = false },
		"negative":            func(o *Options) { o.ProbePeriod = -1 },
	} {
		o := base
		f(&o)
		if _, err := New(o); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("%s: err = %v, want ErrInvalidOptions", name, err)
		}
	}
}
