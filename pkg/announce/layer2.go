package announce

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"k8s.io/utils/clock"

	"github.com/vip-lb/vip/pkg/announce/addr"
	"github.com/vip-lb/vip/pkg/announce/arp"
	"github.com/vip-lb/vip/pkg/announce/ndp"
)

// Options configure a Layer2. The zero value is usable (as root).
type Options struct {
	// Logger receives structured logs; the zero value discards them.
	Logger logr.Logger
	// Registerer receives the metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Handle is the netlink handle for addresses and routes; nil makes one in
	// the caller's network namespace (see addr.Options.Handle).
	Handle *netlink.Handle
	// StatePath records bound addresses for crash recovery; empty means
	// addr.DefaultStatePath.
	StatePath string
	// Count is the number of announcement rounds per burst; 0 means 3.
	Count int
	// Interval is the pause between rounds; 0 means 150ms.
	Interval time.Duration
	// Clock paces the rounds (nil: the real clock; tests pass a fake one).
	Clock clock.WithTicker
	// Listen opens the packet connection of an interface; nil opens a
	// send-only AF_PACKET socket in the network namespace of the calling
	// thread.
	Listen func(ifi *net.Interface) (net.PacketConn, error)
	// Interface resolves interface names for packet sockets; nil means
	// net.InterfaceByName.
	Interface func(name string) (*net.Interface, error)
}

// binder is what Layer2 needs from *addr.Manager.
type binder interface {
	Add(owner string, vip netip.Addr, iface string) (bool, error)
	Remove(owner string, vip netip.Addr) (bool, error)
	Interface(vip netip.Addr) (string, bool)
	HasOwner(owner string, vip netip.Addr) bool
	Held() []netip.Addr
	Len() int
	Cleanup(ctx context.Context) error
	RemoveAll(ctx context.Context) error
	Close() error
}

// burster is what Layer2 needs from *arp.Sender and *ndp.Sender.
type burster interface {
	Burst(ctx context.Context, iface string, vip netip.Addr, count int, interval time.Duration) error
	Close() error
}

var (
	_ burster = (*arp.Sender)(nil)
	_ burster = (*ndp.Sender)(nil)
	_ binder  = (*addr.Manager)(nil)
)

// vipState serializes the operations on one address and tracks its burst.
// Operations on different addresses run in parallel.
type vipState struct {
	users int // operations holding or waiting for mu; guarded by Layer2.mu

	mu      sync.Mutex
	bound   bool               // Announce bound it and no Withdraw unbound it
	cancel  context.CancelFunc // stops the rounds still to come
	pending bool               // the last burst failed; announce again
}

// Layer2 binds virtual IPs to interfaces and announces them on the link with
// gratuitous ARP (IPv4) or unsolicited neighbour advertisements (IPv6). It is
// safe for concurrent use: calls for one address are serialized, calls for
// different addresses run in parallel. It implements Announcer.
type Layer2 struct {
	addrs    binder
	v4, v6   burster
	m        *metrics
	log      logr.Logger
	count    int
	interval time.Duration

	life context.Context // parent of every burst; cancelled by Close
	stop context.CancelFunc

	mu     sync.Mutex
	vips   map[netip.Addr]*vipState
	ops    sync.WaitGroup // operations in flight, awaited by Close
	closed bool
}

var _ Announcer = (*Layer2)(nil)

// NewLayer2 returns a Layer2. Call Cleanup before the first Announce to
// remove what a crashed predecessor left behind.
func NewLayer2(opts Options) (*Layer2, error) {
	addrs, err := addr.New(addr.Options{Handle: opts.Handle, StatePath: opts.StatePath, Logger: opts.Logger})
	if err != nil {
		return nil, err
	}
	l, err := newLayer2(opts, addrs)
	if err != nil {
		_ = addrs.Close()
		return nil, err
	}
	return l, nil
}

// newLayer2 wires a Layer2 around addrs; tests pass a fake.
func newLayer2(opts Options, addrs binder) (*Layer2, error) {
	m, err := newMetrics(opts.Registerer, func() float64 { return float64(addrs.Len()) })
	if err != nil {
		return nil, err
	}
	life, stop := context.WithCancel(context.Background())
	l := &Layer2{
		addrs:    addrs,
		m:        m,
		log:      opts.Logger,
		count:    opts.Count,
		interval: opts.Interval,
		life:     life,
		stop:     stop,
		vips:     map[netip.Addr]*vipState{},
	}
	l.v4 = arp.New(arp.Options{
		Logger: opts.Logger, Listen: opts.Listen, Interface: opts.Interface,
		Sent: func(n int) { m.sent4.Add(float64(n)) }, Failed: l.burstFailed, Clock: opts.Clock,
	})
	l.v6 = ndp.New(ndp.Options{
		Logger: opts.Logger, Listen: opts.Listen, Interface: opts.Interface,
		Sent: func(n int) { m.sent6.Add(float64(n)) }, Failed: l.burstFailed, Clock: opts.Clock,
	})
	return l, nil
}

func (l *Layer2) burstFailed(vip netip.Addr, err error) {
	l.m.fail(OpBurst)
	l.log.Error(err, "announcement round failed", "vip", vip)
}

// Announce binds vip for owner and, when owner is new to vip, sends a burst:
// the first round before returning, the others in the background until
// Withdraw, the next burst for vip, or Close (not when ctx ends, so a
// per-call deadline does not cut the burst short). Announcing again for the
// same owner is a no-op; Refresh resends. An empty iface means the interface
// whose connected route covers vip. On error nothing changed for owner: if
// the first round cannot be sent the binding is undone. When the address is
// on the interface already but was not bound by vip, the error wraps
// ErrForeignAddress and nothing is announced.
func (l *Layer2) Announce(ctx context.Context, owner string, vip netip.Addr, iface string) error {
	vip = vip.Unmap().WithZone("")
	if err := ctx.Err(); err != nil {
		return err
	}
	st, err := l.lock(vip)
	if err != nil {
		return err
	}
	defer l.unlock(vip, st)
	had := l.addrs.HasOwner(owner, vip)
	added, err := l.addrs.Add(owner, vip, iface)
	if err != nil {
		l.m.fail(OpAnnounce)
		return fmt.Errorf("announcing %s: %w", vip, err)
	}
	st.bound = true
	if had && !st.pending {
		return nil
	}
	iface, _ = l.addrs.Interface(vip)
	if err := l.burstLocked(vip, iface, st); err != nil {
		l.m.fail(OpAnnounce)
		if !had {
			l.rollback(owner, vip, st)
		}
		return fmt.Errorf("announcing %s on %q: %w", vip, iface, err)
	}
	l.log.V(1).Info("announced", "vip", vip, "iface", iface, "owner", owner, "bound", added)
	return nil
}

// rollback undoes the binding of a failed Announce, so that an error means
// nothing changed for owner. If that fails too, the binding stays and the
// next Announce sends the burst again. Callers hold st.mu.
func (l *Layer2) rollback(owner string, vip netip.Addr, st *vipState) {
	removed, err := l.addrs.Remove(owner, vip)
	if err != nil {
		l.log.Error(err, "keeping address bound after a failed announcement", "vip", vip, "owner", owner)
		return
	}
	if removed {
		if st.cancel != nil {
			st.cancel()
			st.cancel = nil
		}
		st.bound, st.pending = false, false
	}
}

// lock returns the state of vip with its mutex held, creating it if needed.
func (l *Layer2) lock(vip netip.Addr) (*vipState, error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, ErrClosed
	}
	st := l.vips[vip]
	if st == nil {
		st = &vipState{}
		l.vips[vip] = st
	}
	st.users++
	l.ops.Add(1)
	l.mu.Unlock()
	st.mu.Lock()
	return st, nil
}

// unlock releases st and forgets it once nobody uses it and vip is unbound.
func (l *Layer2) unlock(vip netip.Addr, st *vipState) {
	l.mu.Lock()
	st.users--
	if st.users == 0 && !st.bound && l.vips[vip] == st {
		delete(l.vips, vip)
	}
	l.mu.Unlock()
	st.mu.Unlock()
	l.ops.Done()
}

// burstLocked replaces the burst of vip by a new one. Callers hold st.mu; it
// only waits for the first round to be written, never for the interval.
func (l *Layer2) burstLocked(vip netip.Addr, iface string, st *vipState) error {
	if st.cancel != nil {
		st.cancel()
	}
	ctx, cancel := context.WithCancel(l.life)
	st.cancel = cancel
	s := l.v6
	if vip.Is4() {
		s = l.v4
	}
	if err := s.Burst(ctx, iface, vip, l.count, l.interval); err != nil {
		st.pending = true
		return err
	}
	st.pending = false
	return nil
}

// Withdraw drops owner from vip; after the last owner it stops the burst and
// unbinds vip. Withdrawing what is not held is a no-op.
func (l *Layer2) Withdraw(ctx context.Context, owner string, vip netip.Addr) error {
	vip = vip.Unmap().WithZone("")
	st, err := l.lock(vip)
	if err != nil {
		return err
	}
	defer l.unlock(vip, st)
	removed, err := l.addrs.Remove(owner, vip)
	if err != nil {
		l.m.fail(OpWithdraw)
		return fmt.Errorf("withdrawing %s: %w", vip, err)
	}
	if !removed {
		return nil
	}
	if st.cancel != nil {
		st.cancel()
		st.cancel = nil
	}
	st.bound, st.pending = false, false
	l.log.V(1).Info("withdrew", "vip", vip, "owner", owner)
	return nil
}

// Refresh sends a new burst for a held address without binding it again,
// for example after a link came back up.
func (l *Layer2) Refresh(ctx context.Context, vip netip.Addr) error {
	vip = vip.Unmap().WithZone("")
	if err := ctx.Err(); err != nil {
		return err
	}
	st, err := l.lock(vip)
	if err != nil {
		return err
	}
	defer l.unlock(vip, st)
	iface, ok := l.addrs.Interface(vip)
	if !ok || !st.bound {
		return fmt.Errorf("refreshing %s: %w", vip, ErrNotHeld)
	}
	if err := l.burstLocked(vip, iface, st); err != nil {
		l.m.fail(OpRefresh)
		return fmt.Errorf("refreshing %s on %q: %w", vip, iface, err)
	}
	return nil
}

// Held returns the addresses bound by this Layer2, sorted.
func (l *Layer2) Held() []netip.Addr { return l.addrs.Held() }

// InterfaceFor names the interface an address would be bound to when
// announced without one (the connected route covering it).
func (l *Layer2) InterfaceFor(vip netip.Addr) (string, error) {
	if r, ok := l.addrs.(interface {
		InterfaceFor(netip.Addr) (string, error)
	}); ok {
		return r.InterfaceFor(vip)
	}
	return "", ErrNoInterface
}

// Cleanup removes the addresses a previous run left behind (see
// addr.Manager.Cleanup).
func (l *Layer2) Cleanup(ctx context.Context) error {
	if err := l.addrs.Cleanup(ctx); err != nil {
		l.m.fail(OpCleanup)
		return fmt.Errorf("cleaning up: %w", err)
	}
	return nil
}

// closeTimeout bounds the removal of addresses on Close.
const closeTimeout = 10 * time.Second

// Close stops every burst, unbinds every address this Layer2 bound and
// releases its sockets. Later calls return nil.
func (l *Layer2) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.stop()
	l.mu.Unlock()
	l.ops.Wait() // no Announce may bind after RemoveAll

	var errs []error
	for _, s := range []burster{l.v4, l.v6} {
		if s != nil {
			errs = append(errs, s.Close())
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	errs = append(errs, l.addrs.RemoveAll(ctx), l.addrs.Close())
	if err := errors.Join(errs...); err != nil {
		l.m.fail(OpClose)
		return fmt.Errorf("closing: %w", err)
	}
	return nil
}
