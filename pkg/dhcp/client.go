package dhcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
)

// releaseDrain is how long a DHCPRELEASE is given to leave before the
// macvlan is deleted.
const releaseDrain = 50 * time.Millisecond

// client keeps the lease of one key.
type client struct {
	m    *Manager
	key  string
	p    Params
	link string
	mac  net.HardwareAddr

	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
	release bool // guarded by mu; read after cancel

	mu       sync.Mutex
	lease    *nclient4.Lease
	cur      Lease
	failures int
}

func newClient(m *Manager, key string, p Params) *client {
	ctx, cancel := context.WithCancel(context.Background())
	return &client{m: m, key: key, p: p, link: linkName(m.o.Prefix, key), mac: MAC(key), ctx: ctx, cancel: cancel, done: make(chan struct{})}
}

// current returns the lease while it is valid.
func (c *client) current() (Lease, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.cur.Addr.IsValid() || !c.cur.Times.Valid(time.Now()) {
		return Lease{}, false
	}
	return c.cur, true
}

func (c *client) stop(release bool) {
	c.mu.Lock()
	c.release = release
	c.mu.Unlock()
	c.cancel()
	<-c.done
}

func (c *client) run() {
	defer close(c.done)
	log := c.m.log.WithValues("service", c.key, "iface", c.link)
	var nc *nclient4.Client
	var conn net.PacketConn
	defer func() {
		c.mu.Lock()
		release, lease, had := c.release, c.lease, c.cur.Addr.IsValid()
		c.mu.Unlock()
		if nc != nil {
			if release && lease != nil {
				if err := c.sendRelease(conn, lease); err != nil {
					log.Error(err, "sending DHCPRELEASE")
				} else {
					log.Info("released DHCP lease", "vip", lease.ACK.YourIPAddr)
					// The frame is only queued: deleting the macvlan at once
					// would drop it.
					time.Sleep(releaseDrain)
				}
			}
			_ = nc.Close()
		}
		if had {
			c.m.m.held.Dec()
		}
		if err := deleteLink(c.m.h, c.link); err != nil {
			log.Error(err, "deleting macvlan")
		}
	}()
	for {
		if nc == nil {
			var err error
			if nc, conn, err = c.open(); err != nil {
				c.failed(Acquire, err)
				if !c.sleepUntil(time.Now().Add(c.m.o.Backoff.Delay(c.failureCount()))) {
					return
				}
				continue
			}
		}
		c.mu.Lock()
		times, failures := c.cur.Times, c.failures
		if !c.cur.Addr.IsValid() {
			times = Times{}
		}
		c.mu.Unlock()
		action, at := Next(times, time.Now(), failures, c.m.o.Backoff)
		if !c.sleepUntil(at) {
			return
		}
		c.expire(time.Now())
		c.mu.Lock()
		held := c.cur
		c.mu.Unlock()
		var ack *nclient4.Lease
		var err error
		if held.Addr.IsValid() && action != Acquire {
			ack, err = c.extend(nc, held.Addr)
			if errors.Is(err, ErrNak) {
				c.lose(action, err)
			}
		} else {
			action = Acquire
			ack, err = c.acquire(nc)
		}
		if c.ctx.Err() != nil {
			return
		}
		if err != nil {
			c.failed(action, err)
			continue
		}
		c.bound(action, ack)
	}
}

// open creates the macvlan and the client on it.
func (c *client) open() (*nclient4.Client, net.PacketConn, error) {
	if err := ensureLink(c.m.h, c.link, c.p.Parent, c.mac); err != nil {
		return nil, nil, err
	}
	conn, err := nclient4.NewRawUDPConn(c.link, nclient4.ClientPort)
	if err != nil {
		return nil, nil, fmt.Errorf("opening a DHCP socket on %s: %w", c.link, err)
	}
	nc, err := nclient4.NewWithConn(conn, c.mac, nclient4.WithTimeout(c.m.o.Timeout), nclient4.WithRetry(c.m.o.Retries))
	if err != nil {
		_ = conn.Close()
		return nil, nil, fmt.Errorf("DHCP client on %s: %w", c.link, err)
	}
	return nc, conn, nil
}

// sendRelease broadcasts DHCPRELEASE. nclient4's Release unicasts it from
// 0.0.0.0, which Linux servers drop as a martian source; a broadcast from
// 0.0.0.0 is accepted, and the server identifier inside says which server
// it is for.
func (c *client) sendRelease(conn net.PacketConn, l *nclient4.Lease) error {
	req, err := dhcpv4.NewReleaseFromACK(l.ACK, dhcpv4.WithOption(dhcpv4.OptClientIdentifier(ClientID(c.mac))))
	if err != nil {
		return fmt.Errorf("building DHCPRELEASE: %w", err)
	}
	_, err = conn.WriteTo(req.ToBytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: nclient4.ServerPort})
	return err
}

// common are the options of every message.
func (c *client) common() []dhcpv4.Modifier {
	mods := []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClientIdentifier(ClientID(c.mac))),
		dhcpv4.WithRequestedOptions(dhcpv4.OptionSubnetMask, dhcpv4.OptionIPAddressLeaseTime,
			dhcpv4.OptionRenewTimeValue, dhcpv4.OptionRebindingTimeValue),
	}
	if c.p.Hostname != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(c.p.Hostname)))
	}
	return mods
}

// acquire runs DISCOVER/OFFER/REQUEST/ACK, asking for the previous address.
func (c *client) acquire(nc *nclient4.Client) (*nclient4.Lease, error) {
	want := c.p.Want
	c.mu.Lock()
	if c.cur.Addr.IsValid() {
		want = c.cur.Addr
	}
	c.mu.Unlock()
	disc := c.common()
	if want.Is4() {
		disc = append(disc, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(want.AsSlice())))
	}
	offer, err := nc.DiscoverOffer(c.ctx, disc...)
	if err != nil {
		return nil, fmt.Errorf("no offer: %w", err)
	}
	l, err := nc.RequestFromOffer(c.ctx, offer, c.common()...)
	var nak *nclient4.ErrNak
	if errors.As(err, &nak) {
		return nil, fmt.Errorf("requesting %s: %w", offer.YourIPAddr, ErrNak)
	}
	if err != nil {
		return nil, fmt.Errorf("requesting %s: %w", offer.YourIPAddr, err)
	}
	return l, nil
}

// extend renews or rebinds addr. The REQUEST is broadcast in the
// INIT-REBOOT form (no ciaddr, the address as option 50, broadcast flag), so
// the answer reaches the macvlan even when the server's neighbour entry for
// the address points at the parent interface.
func (c *client) extend(nc *nclient4.Client, addr netip.Addr) (*nclient4.Lease, error) {
	mods := append([]dhcpv4.Modifier{
		dhcpv4.WithHwAddr(c.mac),
		dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithBroadcast(true),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(addr.AsSlice())),
		dhcpv4.WithOption(dhcpv4.OptMaxMessageSize(nclient4.MaxMessageSize)),
	}, c.common()...)
	req, err := dhcpv4.New(mods...)
	if err != nil {
		return nil, fmt.Errorf("building a REQUEST: %w", err)
	}
	resp, err := nc.SendAndRead(c.ctx, nc.RemoteAddr(), req,
		nclient4.IsMessageType(dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak))
	if err != nil {
		return nil, fmt.Errorf("extending %s: %w", addr, err)
	}
	if resp.MessageType() == dhcpv4.MessageTypeNak {
		return nil, fmt.Errorf("extending %s: %w", addr, ErrNak)
	}
	return &nclient4.Lease{Offer: resp, ACK: resp, CreationTime: time.Now()}, nil
}

// bound records a lease from an ACK.
func (c *client) bound(action Action, l *nclient4.Lease) {
	ack := l.ACK
	addr, ok := netip.AddrFromSlice(ack.YourIPAddr.To4())
	if !ok || !addr.IsGlobalUnicast() {
		c.failed(action, fmt.Errorf("server acknowledged unusable address %v", ack.YourIPAddr))
		return
	}
	t := timesFrom(l.CreationTime, ack.IPAddressLeaseTime(0), ack.IPAddressRenewalTime(0), ack.IPAddressRebindingTime(0))
	nl := Lease{Addr: addr, MAC: c.mac, Link: c.link, Times: t}
	if sid, ok := netip.AddrFromSlice(ack.ServerIdentifier().To4()); ok {
		nl.Server = sid
	}
	if mask := ack.SubnetMask(); mask != nil {
		if ones, bits := mask.Size(); bits == 32 {
			nl.Prefix = netip.PrefixFrom(addr, ones).Masked()
		}
	}
	c.mu.Lock()
	prev := c.cur.Addr
	had := prev.IsValid()
	c.cur, c.lease, c.failures = nl, l, 0
	c.mu.Unlock()
	kind := Extended
	if !had || prev != addr {
		kind = Obtained
		c.m.m.obtained.Inc()
		if !had {
			c.m.m.held.Inc()
		}
		c.m.log.Info("DHCP lease obtained", "service", c.key, "vip", addr, "iface", c.link, "expiry", t.Expiry())
	} else {
		c.m.m.extended.Inc()
		c.m.log.V(1).Info("DHCP lease extended", "service", c.key, "vip", addr, "action", action.String(), "expiry", t.Expiry())
	}
	c.emit(Event{Kind: kind, Action: action, Lease: nl})
}

func (c *client) failed(action Action, err error) {
	c.mu.Lock()
	c.failures++
	n, cur := c.failures, c.cur
	c.mu.Unlock()
	c.m.m.failures.WithLabelValues(action.String()).Inc()
	c.m.log.Info("DHCP exchange failed; retrying", "service", c.key, "action", action.String(), "failures", n, "err", err)
	c.emit(Event{Kind: Failed, Action: action, Lease: cur, Err: err, Failures: n})
}

// expire drops a lease that ran out.
func (c *client) expire(now time.Time) {
	c.mu.Lock()
	valid := !c.cur.Addr.IsValid() || c.cur.Times.Valid(now)
	c.mu.Unlock()
	if !valid {
		c.lose(Acquire, fmt.Errorf("%w: lease expired", ErrNoLease))
	}
}

// lose forgets the held lease; the next acquire still asks for its address.
func (c *client) lose(action Action, err error) {
	c.mu.Lock()
	lost := c.cur
	if lost.Addr.IsValid() {
		c.p.Want = lost.Addr
	}
	c.cur, c.lease = Lease{}, nil
	c.mu.Unlock()
	if !lost.Addr.IsValid() {
		return
	}
	c.m.m.lost.Inc()
	c.m.m.held.Dec()
	c.m.log.Info("DHCP lease lost", "service", c.key, "vip", lost.Addr, "err", err)
	c.emit(Event{Kind: Lost, Action: action, Lease: Lease{MAC: c.mac, Link: c.link}, Err: err})
}

func (c *client) failureCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.failures
}

func (c *client) emit(e Event) {
	if c.m.o.OnEvent != nil && c.ctx.Err() == nil {
		c.m.o.OnEvent(c.key, e)
	}
}

// sleepUntil waits for t; false when the client is stopping.
func (c *client) sleepUntil(t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return c.ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-c.ctx.Done():
		return false
	}
}
