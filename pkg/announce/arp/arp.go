package arp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/go-logr/logr"
	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"k8s.io/utils/clock"

	"github.com/vip-lb/vip/pkg/announce/internal/l2conn"
)

// Burst defaults.
const (
	// DefaultCount is the number of rounds in a burst when none is given.
	DefaultCount = l2conn.DefaultCount
	// DefaultInterval is the pause between rounds when none is given.
	DefaultInterval = l2conn.DefaultInterval
)

// Sentinel errors.
var (
	// ErrNotIPv4 is returned when asked to announce an address that is not IPv4.
	ErrNotIPv4 = errors.New("not an IPv4 address")
	// ErrNotEthernet is returned for an interface without an Ethernet address.
	ErrNotEthernet = l2conn.ErrNotEthernet
	// ErrClosed is returned after Close.
	ErrClosed = l2conn.ErrClosed
)

// FramesPerRound is the number of frames one round writes (request + reply).
const FramesPerRound = 2

// Options configure a Sender. The zero value is usable.
type Options struct {
	// Logger receives debug messages; the zero value discards them.
	Logger logr.Logger
	// Listen opens the packet connection of an interface. Nil opens a raw
	// AF_PACKET socket that only sends (a *packet.Conn).
	Listen func(ifi *net.Interface) (net.PacketConn, error)
	// Interface resolves an interface name; nil means net.InterfaceByName.
	Interface func(name string) (*net.Interface, error)
	// Sent, if set, is called with the number of frames each round wrote.
	Sent func(frames int)
	// Failed, if set, is called when a round after the first one fails.
	Failed func(vip netip.Addr, err error)
	// Clock paces the rounds of a burst (nil: the real clock; tests pass a
	// fake one).
	Clock clock.WithTicker
}

func (o Options) hooks() l2conn.Hooks {
	return l2conn.Hooks{Sent: o.Sent, Failed: o.Failed, Clock: o.Clock}
}

// Conn announces addresses from one hardware address over an injected
// net.PacketConn, such as a *packet.Conn bound to the interface.
type Conn struct{ c *l2conn.Conn }

// NewConn returns a Conn writing on pc with source hardware address hw. The
// Conn owns pc. Only Sent and Failed of opts are used.
func NewConn(pc net.PacketConn, hw net.HardwareAddr, opts Options) (*Conn, error) {
	c, err := l2conn.NewConn(pc, hw, frames, opts.hooks())
	if err != nil {
		return nil, err
	}
	return &Conn{c: c}, nil
}

// Send writes one round (GARP request and GARP reply) for vip.
func (c *Conn) Send(vip netip.Addr) error { return c.c.Send(vip) }

// Burst writes the first round before returning and count-1 more rounds,
// interval apart, in the background until ctx is done or the Conn is closed.
// Zero values select DefaultCount and DefaultInterval.
func (c *Conn) Burst(ctx context.Context, vip netip.Addr, count int, interval time.Duration) error {
	return c.c.Burst(ctx, vip, count, interval)
}

// Close stops pending rounds and closes the PacketConn.
func (c *Conn) Close() error { return c.c.Close() }

// Sender announces addresses on any interface, keeping one packet connection
// per interface until Close. It is safe for concurrent use.
type Sender struct{ pool *l2conn.Pool }

// New returns a Sender; connections are opened on first use.
func New(opts Options) *Sender {
	return &Sender{pool: l2conn.NewPool(l2conn.PoolOptions{
		Build:  frames,
		Listen: opts.Listen,
		Lookup: opts.Interface,
		Hooks:  opts.hooks(),
		Logger: opts.Logger,
	})}
}

// Burst announces vip on iface like Conn.Burst.
func (s *Sender) Burst(ctx context.Context, iface string, vip netip.Addr, count int, interval time.Duration) error {
	if !vip.Is4() {
		return fmt.Errorf("announcing %s: %w", vip, ErrNotIPv4)
	}
	return s.pool.Burst(ctx, iface, vip, count, interval)
}

// Forget closes the connection of iface; the next Burst reopens it and reads
// the interface's hardware address again.
func (s *Sender) Forget(iface string) error { return s.pool.Forget(iface) }

// Close stops pending rounds and closes every connection.
func (s *Sender) Close() error { return s.pool.Close() }

// zeroMAC is the target hardware address of an ARP announcement (RFC 5227).
var zeroMAC = net.HardwareAddr{0, 0, 0, 0, 0, 0}

// frames builds a GARP request and a GARP reply for vip, both broadcast.
// The reply's target hardware address equals the sender's: Linux only treats
// a reply as gratuitous (and overrides a recently confirmed entry) then.
func frames(hw net.HardwareAddr, vip netip.Addr) ([][]byte, error) {
	if !vip.Is4() {
		return nil, fmt.Errorf("announcing %s: %w", vip, ErrNotIPv4)
	}
	out := make([][]byte, 0, FramesPerRound)
	for _, op := range []struct {
		op  arp.Operation
		tha net.HardwareAddr
	}{{arp.OperationRequest, zeroMAC}, {arp.OperationReply, hw}} {
		p, err := arp.NewPacket(op.op, hw, vip, op.tha, vip)
		if err != nil {
			return nil, fmt.Errorf("building ARP %s for %s: %w", op.op, vip, err)
		}
		pb, err := p.MarshalBinary()
		if err != nil {
			return nil, fmt.Errorf("encoding ARP %s for %s: %w", op.op, vip, err)
		}
		f := &ethernet.Frame{
			Destination: ethernet.Broadcast,
			Source:      hw,
			EtherType:   ethernet.EtherTypeARP,
			Payload:     pb,
		}
		fb, err := f.MarshalBinary()
		if err != nil {
			return nil, fmt.Errorf("encoding Ethernet frame for %s: %w", vip, err)
		}
		out = append(out, fb)
	}
	return out, nil
}
