package l2conn

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/mdlayher/packet"
)

// Listen opens a packet connection on an interface.
type Listen func(ifi *net.Interface) (net.PacketConn, error)

// Lookup resolves an interface name.
type Lookup func(name string) (*net.Interface, error)

// ListenSendOnly opens a raw packet socket bound to ifi with protocol 0, so
// the kernel delivers no incoming frames to it: the socket only sends.
func ListenSendOnly(ifi *net.Interface) (net.PacketConn, error) {
	return packet.Listen(ifi, packet.Raw, 0, nil)
}

// PoolOptions configure a Pool.
type PoolOptions struct {
	// Build makes the frames; required.
	Build Build
	// Listen opens connections; nil means ListenSendOnly.
	Listen Listen
	// Lookup resolves names; nil means net.InterfaceByName.
	Lookup Lookup
	// Hooks are passed to every Conn.
	Hooks Hooks
	// Logger receives debug messages.
	Logger logr.Logger
}

// Pool keeps one Conn per interface name, opened on first use.
type Pool struct {
	opts PoolOptions

	mu     sync.Mutex
	conns  map[string]*Conn
	closed bool
}

// NewPool returns an empty Pool.
func NewPool(opts PoolOptions) *Pool {
	if opts.Listen == nil {
		opts.Listen = ListenSendOnly
	}
	if opts.Lookup == nil {
		opts.Lookup = net.InterfaceByName
	}
	return &Pool{opts: opts, conns: map[string]*Conn{}}
}

// Get returns the Conn for iface, opening it if needed.
func (p *Pool) Get(iface string) (*Conn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrClosed
	}
	if c, ok := p.conns[iface]; ok {
		return c, nil
	}
	ifi, err := p.opts.Lookup(iface)
	if err != nil {
		return nil, fmt.Errorf("looking up interface %q: %w", iface, err)
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("interface %q: %w", iface, ErrNotEthernet)
	}
	pc, err := p.opts.Listen(ifi)
	if err != nil {
		return nil, fmt.Errorf("opening packet socket on %q: %w", iface, err)
	}
	c, err := NewConn(pc, ifi.HardwareAddr, p.opts.Build, p.opts.Hooks)
	if err != nil {
		_ = pc.Close()
		return nil, err
	}
	p.conns[iface] = c
	p.opts.Logger.V(1).Info("opened packet socket", "iface", iface, "index", ifi.Index, "mac", ifi.HardwareAddr.String())
	return c, nil
}

// Forget closes and drops the Conn of iface, so the next use reopens it and
// reads the interface's index and hardware address again.
func (p *Pool) Forget(iface string) error {
	p.mu.Lock()
	c, ok := p.conns[iface]
	delete(p.conns, iface)
	p.mu.Unlock()
	if !ok {
		return nil
	}
	return c.Close()
}

// forget drops c if it is still the Conn of iface.
func (p *Pool) forget(iface string, c *Conn) {
	p.mu.Lock()
	if p.conns[iface] == c {
		delete(p.conns, iface)
	}
	p.mu.Unlock()
	_ = c.Close()
}

// Burst runs Conn.Burst on the Conn of iface. When the interface has vanished
// since the Conn was opened (it was deleted and perhaps recreated), the Conn
// is reopened once.
func (p *Pool) Burst(ctx context.Context, iface string, vip netip.Addr, count int, interval time.Duration) error {
	for attempt := 0; ; attempt++ {
		c, err := p.Get(iface)
		if err != nil {
			return err
		}
		err = c.Burst(ctx, vip, count, interval)
		if err == nil || attempt > 0 || !interfaceGone(err) {
			return err
		}
		p.opts.Logger.V(1).Info("reopening packet socket", "iface", iface, "err", err.Error())
		p.forget(iface, c)
	}
}

// interfaceGone reports whether err means the socket's interface no longer exists.
func interfaceGone(err error) bool {
	return errors.Is(err, syscall.ENXIO) || errors.Is(err, syscall.ENODEV)
}

// Close closes every Conn; the Pool cannot be used afterwards.
func (p *Pool) Close() error {
	p.mu.Lock()
	conns := p.conns
	p.conns = map[string]*Conn{}
	p.closed = true
	p.mu.Unlock()
	var errs []error
	for name, c := range conns {
		if err := c.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing packet socket on %q: %w", name, err))
		}
	}
	return errors.Join(errs...)
}
