package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/vip-lb/vip/pkg/dhcp"
)

// Controller holds the control-plane VIP on this node while it should.
type Controller struct {
	o       Options
	log     logr.Logger
	metrics *metrics
	el      *elector // nil with EveryReadyNode

	mu        sync.Mutex
	ready     bool       // the local API server answers /readyz
	leading   bool       // this node holds the Lease
	vip       netip.Addr // the address to announce (invalid until resolved)
	announced netip.Addr // what is announced now (invalid: nothing)
	failed    bool       // the last announcement failed; retry
	changed   chan struct{}
}

// New validates o and builds a Controller; Run starts it.
func New(o Options) (*Controller, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(o.Registerer)
	if err != nil {
		return nil, err
	}
	c := &Controller{
		o: o, log: o.Logger.WithValues("address", o.Address), metrics: m,
		changed: make(chan struct{}, 1),
	}
	if a, err := netip.ParseAddr(o.Address); err == nil {
		c.vip = a.Unmap()
	}
	if !o.EveryReadyNode {
		c.el = newElector(o, c.log, m.transition, func(d bool) { m.denied.Set(b2f(d)) })
		c.el.address = c.address
	}
	return c, nil
}

// Run holds the VIP until ctx ends; then it withdraws the VIP and releases
// the Lease (within about a second) and returns.
func (c *Controller) Run(ctx context.Context) error {
	c.log.Info("control-plane VIP", "lease", c.o.Namespace+"/"+c.o.LeaseName, "identity", c.o.Identity,
		"election", c.el != nil, "leaseDuration", c.o.LeaseDuration, "renewDeadline", c.o.RenewDeadline, "retryPeriod", c.o.RetryPeriod)
	var wg sync.WaitGroup
	wg.Go(func() { c.probeLoop(ctx) })
	if !c.vip.IsValid() {
		wg.Go(func() { c.resolveLoop(ctx) })
	}
	wg.Go(func() { c.retryLoop(ctx) })
	if c.el != nil {
		c.electLoop(ctx)
	} else {
		<-ctx.Done()
	}
	wg.Wait()
	c.mu.Lock()
	c.ready, c.leading = false, false
	c.syncLocked(context.Background())
	c.mu.Unlock()
	c.ddns(false)
	return nil
}

// ddns keeps the DHCP lease of the address while this node leads; a
// successor asks for the same address with the same MAC and client ID.
func (c *Controller) ddns(leading bool) {
	if c.o.DDNS == nil {
		return
	}
	key := c.o.ddnsKey()
	if !leading {
		c.o.DDNS.Stop(key, false)
		return
	}
	c.mu.Lock()
	want := c.vip
	c.mu.Unlock()
	p := dhcp.Params{Parent: c.o.DDNSInterface, Hostname: c.o.ddnsHostname(), Want: want}
	if err := c.o.DDNS.Ensure(key, p); err != nil {
		c.log.Error(err, "starting the DHCP client for dynamic DNS")
		return
	}
	c.log.Info("dynamic DNS: keeping a DHCP lease for the address", "hostname", p.Hostname, "iface", p.Parent)
}

// Announced returns the VIP this node announces now (invalid: none).
func (c *Controller) Announced() netip.Addr {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.announced
}

// Ready reports whether the local API server answered /readyz last.
func (c *Controller) Ready() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ready
}

// electLoop campaigns while the local API server is ready and the address
// is known, and stops campaigning (withdrawing first) when it is not.
func (c *Controller) electLoop(ctx context.Context) {
	for {
		if !c.waitFor(ctx, true) {
			return
		}
		ectx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			c.el.run(ectx, c.setLeading)
		}()
		stillOK := c.waitFor(ctx, false)
		cancel()
		<-done
		if !stillOK {
			return
		}
	}
}

// waitFor blocks until campaigning is possible (want true) or no longer
// possible (want false); it returns false when ctx ends first.
func (c *Controller) waitFor(ctx context.Context, want bool) bool {
	for {
		c.mu.Lock()
		// With DDNS the holder obtains the address, so it campaigns first.
		ok := c.ready && (c.vip.IsValid() || c.o.DDNS != nil)
		c.mu.Unlock()
		if ok == want {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-c.changed:
		}
	}
}

func (c *Controller) notify() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// setLeading is the elector's callback: it returns once the VIP is
// announced or withdrawn accordingly.
func (c *Controller) setLeading(leading bool) {
	c.ddns(leading)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.leading = leading
	c.metrics.leader.Set(b2f(leading))
	c.syncLocked(context.Background())
}

func (c *Controller) setReady(ready bool) {
	c.mu.Lock()
	if c.ready == ready {
		c.mu.Unlock()
		return
	}
	c.ready = ready
	c.metrics.ready.Set(b2f(ready))
	c.syncLocked(context.Background())
	c.mu.Unlock()
	c.notify()
}

// address is the VIP as resolved so far (invalid until then).
func (c *Controller) address() netip.Addr {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.vip
}

func (c *Controller) setVIP(a netip.Addr) {
	c.mu.Lock()
	if c.vip == a {
		c.mu.Unlock()
		return
	}
	if c.vip.IsValid() {
		c.metrics.addressChanges.Inc()
	}
	c.log.Info("control-plane address resolved", "vip", a, "previous", c.vip)
	c.vip = a
	c.syncLocked(context.Background())
	c.mu.Unlock()
	c.notify()
}

// syncLocked announces or withdraws so that the VIP is announced exactly
// when it should be. Withdrawal comes first, so an address change never
// announces two addresses. Callers hold c.mu.
func (c *Controller) syncLocked(ctx context.Context) {
	want := c.ready && c.vip.IsValid() && (c.leading || c.el == nil)
	if c.announced.IsValid() && (!want || c.announced != c.vip) {
		if err := c.o.Announcer.Withdraw(ctx, Owner, c.announced); err != nil {
			c.log.Error(err, "withdrawing the control-plane VIP", "vip", c.announced)
		} else {
			c.log.Info("control-plane VIP withdrawn", "vip", c.announced, "ready", c.ready, "leading", c.leading)
		}
		c.announced = netip.Addr{}
		c.metrics.announced.Set(0)
	}
	if !want || c.announced.IsValid() {
		c.failed = false
		return
	}
	if err := c.o.Announcer.Announce(ctx, Owner, c.vip, c.o.Interface); err != nil {
		if !c.failed {
			c.log.Error(err, "announcing the control-plane VIP; retrying", "vip", c.vip, "iface", c.o.Interface)
		}
		c.failed = true
		c.metrics.errors.Inc()
		return
	}
	c.failed = false
	c.announced = c.vip
	c.metrics.announced.Set(1)
	c.log.Info("control-plane VIP announced", "vip", c.vip, "iface", c.o.Interface)
}

// retryLoop retries a failed announcement.
func (c *Controller) retryLoop(ctx context.Context) {
	t := c.o.Clock.NewTicker(retryInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		c.mu.Lock()
		if c.failed {
			c.syncLocked(ctx)
		}
		c.mu.Unlock()
	}
}

// probeLoop asks the local API server's /readyz every ProbePeriod: one
// success makes this node ready, ProbeFailures failures in a row unready.
func (c *Controller) probeLoop(ctx context.Context) {
	failures := 0
	t := c.o.Clock.NewTicker(c.o.ProbePeriod)
	defer t.Stop()
	for {
		err := c.o.Probe(ctx)
		if ctx.Err() != nil {
			return
		}
		switch {
		case err == nil:
			if failures >= c.o.ProbeFailures {
				c.log.Info("local API server is ready again")
			}
			failures = 0
			c.setReady(true)
		default:
			failures++
			if failures == c.o.ProbeFailures {
				c.log.Info("local API server is not ready; not holding the control-plane VIP", "err", err.Error())
				c.setReady(false)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
	}
}

// resolveLoop resolves a DNS name at start (every second until it works)
// and then every ResolvePeriod; a failed lookup keeps the last address.
func (c *Controller) resolveLoop(ctx context.Context) {
	for {
		a, err := c.resolve(ctx)
		wait := c.o.ResolvePeriod
		switch {
		case err != nil && ctx.Err() == nil:
			c.log.Info("resolving the control-plane address failed", "err", err.Error())
			c.metrics.errors.Inc()
			if !c.currentVIP().IsValid() {
				wait = time.Second
			}
		case err == nil:
			c.setVIP(a)
		}
		select {
		case <-ctx.Done():
			return
		case <-c.o.Clock.After(wait):
		}
	}
}

func (c *Controller) currentVIP() netip.Addr {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.vip
}

// errNoAddress means the name resolved to no usable address.
var errNoAddress = errors.New("no usable address")

// resolve looks the name up and picks the address: the current one while
// the record still has it (round-robin answers do not move the VIP), else
// the first IPv4 address, else the first IPv6 one.
func (c *Controller) resolve(ctx context.Context) (netip.Addr, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := c.o.Resolve(ctx, c.o.Address)
	if err != nil {
		return netip.Addr{}, err
	}
	var usable []netip.Addr
	for _, a := range addrs {
		a = a.Unmap().WithZone("")
		if checkVIP(a) == nil {
			usable = append(usable, a)
		}
	}
	if len(usable) == 0 {
		return netip.Addr{}, fmt.Errorf("%s: %w", c.o.Address, errNoAddress)
	}
	if cur := c.currentVIP(); slices.Contains(usable, cur) {
		return cur, nil
	}
	for _, a := range usable {
		if a.Is4() {
			return a, nil
		}
	}
	return usable[0], nil
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
