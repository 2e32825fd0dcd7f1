package dhcp

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
)

// Sentinel errors, checked with errors.Is.
var (
	// ErrNoParent means the interface the macvlan should sit on is missing.
	ErrNoParent = errors.New("parent interface not found")
	// ErrNoLease means no valid lease is held for the key.
	ErrNoLease = errors.New("no DHCP lease")
	// ErrNak means the server refused the address.
	ErrNak = errors.New("DHCP server refused the address (NAK)")
	// ErrClosed means the Manager was closed.
	ErrClosed = errors.New("DHCP manager closed")
	// ErrLimit means the node already runs Options.MaxClients DHCP clients
	// (one macvlan interface each).
	ErrLimit = errors.New("DHCP interface limit of this node reached")
)

// DefaultMaxClients is the per-node cap on DHCP clients (macvlan
// interfaces) when Options.MaxClients is zero: each one takes an address
// from the LAN's DHCP server, so a namespace allowed to use DHCP cannot
// drain the server's pool from one node.
const DefaultMaxClients = 64

// Options configure a Manager. The zero value is usable (as root).
type Options struct {
	// Handle is the netlink handle for the macvlans; nil makes one in the
	// caller's network namespace.
	Handle *netlink.Handle
	// Logger receives structured logs; the zero value discards them.
	Logger logr.Logger
	// Registerer receives the metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// OnEvent is called (from the client's goroutine) after every lease
	// change or failed exchange; nil ignores them.
	OnEvent func(key string, e Event)
	// Timeout is the first wait for an answer, doubled on each of Retries
	// retransmissions; 0 means 1s and 3.
	Timeout time.Duration
	Retries int
	// Backoff spaces failed exchanges; zero means 1s doubling to 30s.
	Backoff Backoff
	// MaxClients caps the clients (macvlan interfaces) this Manager runs;
	// Ensure for a new key beyond it returns ErrLimit. 0 means
	// DefaultMaxClients, a negative value no cap.
	MaxClients int
	// Prefix starts the macvlan names: four characters, LinkPrefix when
	// empty. Managers with different prefixes leave each other's links
	// alone in Cleanup.
	Prefix string
}

// Params say what a client asks for.
type Params struct {
	// Parent is the interface the macvlan is created on.
	Parent string
	// Hostname, when set, is sent as option 12 (servers such as dnsmasq
	// register it in DNS).
	Hostname string
	// Want is the address to ask for when no lease is held (for example the
	// one another node held before); the zero Addr asks for any.
	Want netip.Addr
}

// Lease is a lease held for a key.
type Lease struct {
	Addr   netip.Addr
	Prefix netip.Prefix // the subnet the server announced (option 1)
	Server netip.Addr
	MAC    net.HardwareAddr
	Link   string
	Times  Times
}

// Expiry is when the lease ends unless extended.
func (l Lease) Expiry() time.Time { return l.Times.Expiry() }

// EventKind says what happened to a lease.
type EventKind int

// The kinds of Event.
const (
	// Obtained: a new lease (or another address than before) is held.
	Obtained EventKind = iota
	// Extended: the lease was renewed or rebound.
	Extended
	// Failed: an exchange got no lease; the held lease, if any, stays.
	Failed
	// Lost: the lease expired or the server refused it; the address is gone.
	Lost
)

// String names the kind for logs.
func (k EventKind) String() string {
	if k < Obtained || k > Lost {
		return "unknown"
	}
	return [...]string{"obtained", "extended", "failed", "lost"}[k]
}

// Event reports a lease change or a failed exchange.
type Event struct {
	Kind     EventKind
	Action   Action
	Lease    Lease // the lease after the event (zero Addr when none)
	Err      error
	Failures int // consecutive failures so far
}

// Manager runs one DHCP client per key. It is safe for concurrent use.
type Manager struct {
	o           Options
	h           links
	closeHandle func()
	log         logr.Logger
	m           *metrics

	mu      sync.Mutex
	clients map[string]*client
	closed  bool
}

// New returns a Manager. Call Cleanup before the first Ensure to remove the
// macvlans a crashed predecessor left behind.
func New(o Options) (*Manager, error) {
	if o.Timeout <= 0 {
		o.Timeout = time.Second
	}
	if o.Retries <= 0 {
		o.Retries = 3
	}
	if o.Prefix == "" {
		o.Prefix = LinkPrefix
	}
	if o.MaxClients == 0 {
		o.MaxClients = DefaultMaxClients
	}
	if len(o.Prefix) != len(LinkPrefix) {
		return nil, fmt.Errorf("link prefix %q: want %d characters", o.Prefix, len(LinkPrefix))
	}
	if o.Backoff.Min <= 0 {
		o.Backoff.Min = time.Second
	}
	if o.Backoff.Max < o.Backoff.Min {
		o.Backoff.Max = max(30*time.Second, o.Backoff.Min)
	}
	m := &Manager{o: o, log: o.Logger, m: newMetrics(o.Registerer), clients: map[string]*client{}}
	if o.Handle != nil {
		m.h, m.closeHandle = o.Handle, func() {}
	} else {
		h, err := netlink.NewHandle()
		if err != nil {
			return nil, fmt.Errorf("netlink handle: %w", err)
		}
		m.h, m.closeHandle = h, h.Close
	}
	return m, nil
}

// Ensure keeps a client running for key with p. A running client with the
// same parent and hostname is left alone; otherwise it is restarted
// (without releasing its lease, whose address it then asks for again).
func (m *Manager) Ensure(key string, p Params) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	c := m.clients[key]
	if c != nil && c.p.Parent == p.Parent && c.p.Hostname == p.Hostname {
		m.mu.Unlock()
		return nil
	}
	if c != nil {
		delete(m.clients, key)
		if l, ok := c.current(); ok {
			p.Want = l.Addr
		}
	}
	m.mu.Unlock()
	if c != nil {
		c.stop(false)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if m.clients[key] != nil {
		return nil // a concurrent Ensure won
	}
	if m.o.MaxClients > 0 && len(m.clients) >= m.o.MaxClients {
		return fmt.Errorf("starting a DHCP client for %s: %d running: %w", key, len(m.clients), ErrLimit)
	}
	c = newClient(m, key, p)
	m.clients[key] = c
	go c.run()
	return nil
}

// Lease returns the valid lease held for key.
func (m *Manager) Lease(key string) (Lease, bool) {
	m.mu.Lock()
	c := m.clients[key]
	m.mu.Unlock()
	if c == nil {
		return Lease{}, false
	}
	return c.current()
}

// Running reports whether a client runs for key.
func (m *Manager) Running(key string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.clients[key] != nil
}

// Stop ends the client for key and deletes its macvlan. With release it
// first sends DHCPRELEASE for a held lease (the Service is gone); without
// it the lease stays with the server, so that the next holder of the key
// gets the same address. It waits for the client to finish.
func (m *Manager) Stop(key string, release bool) {
	m.mu.Lock()
	c := m.clients[key]
	delete(m.clients, key)
	m.mu.Unlock()
	if c != nil {
		c.stop(release)
	}
}

// Cleanup deletes the macvlans named with the Manager's prefix that no running client
// holds: what a crashed or killed predecessor left.
func (m *Manager) Cleanup(_ context.Context) error {
	ls, err := m.h.LinkList()
	if err != nil {
		return fmt.Errorf("listing links: %w", err)
	}
	m.mu.Lock()
	held := map[string]bool{}
	for _, c := range m.clients {
		held[c.link] = true
	}
	m.mu.Unlock()
	var errs []error
	for _, l := range ls {
		name := l.Attrs().Name
		if _, ok := l.(*netlink.Macvlan); !ok || !isOurs(m.o.Prefix, name) || held[name] {
			continue
		}
		if err := deleteLink(m.h, name); err != nil {
			errs = append(errs, err)
			continue
		}
		m.log.Info("removed macvlan left by a previous run", "iface", name)
	}
	return errors.Join(errs...)
}

// Close stops every client without releasing (the leases go to whichever
// node takes the keys over) and deletes their macvlans.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	cs := make([]*client, 0, len(m.clients))
	for _, c := range m.clients {
		cs = append(cs, c)
	}
	m.clients = map[string]*client{}
	m.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.stop(false)
		}()
	}
	wg.Wait()
	m.closeHandle()
	return nil
}
