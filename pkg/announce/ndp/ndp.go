package ndp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/go-logr/logr"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
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
	// ErrNotIPv6 is returned when asked to announce an address that is not IPv6.
	ErrNotIPv6 = errors.New("not an IPv6 address")
	// ErrNotEthernet is returned for an interface without an Ethernet address.
	ErrNotEthernet = l2conn.ErrNotEthernet
	// ErrClosed is returned after Close.
	ErrClosed = l2conn.ErrClosed
)

// FramesPerRound is the number of frames one round writes.
const FramesPerRound = 1

// AllNodes is the destination of every advertisement.
var AllNodes = netip.MustParseAddr("ff02::1")

// allNodesMAC is the Ethernet multicast address of ff02::1 (RFC 2464).
var allNodesMAC = net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}

// hopLimit is required by RFC 4861; receivers drop anything else.
const hopLimit = 255

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
// net.PacketConn, such as a *packet.Conn bound to the interface. Frames are
// complete Ethernet frames, so no IPv6 address is needed on the interface.
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

// Send writes one unsolicited neighbour advertisement for vip.
func (c *Conn) Send(vip netip.Addr) error { return c.c.Send(vip) }

// Burst writes the first advertisement before returning and count-1 more,
// interval apart, in the background until ctx is done or the Conn is closed.
// Zero values select DefaultCount and DefaultInterval.
func (c *Conn) Burst(ctx context.Context, vip netip.Addr, count int, interval time.Duration) error {
	return c.c.Burst(ctx, vip, count, interval)
}

// Close stops pending advertisements and closes the PacketConn.
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
	if !is6(vip) {
		return fmt.Errorf("announcing %s: %w", vip, ErrNotIPv6)
	}
	return s.pool.Burst(ctx, iface, vip, count, interval)
}

// Forget closes the connection of iface; the next Burst reopens it and reads
// the interface's hardware address again.
func (s *Sender) Forget(iface string) error { return s.pool.Forget(iface) }

// Close stops pending advertisements and closes every connection.
func (s *Sender) Close() error { return s.pool.Close() }

func is6(a netip.Addr) bool { return a.Is6() && !a.Is4In6() }

// frames builds one Ethernet frame carrying an IPv6 packet from vip to
// ff02::1 with an unsolicited, overriding neighbour advertisement for vip.
// Like the kernel's own unsolicited advertisements, the source address is
// the advertised address itself, so no link-local address is needed.
func frames(hw net.HardwareAddr, vip netip.Addr) ([][]byte, error) {
	if !is6(vip) {
		return nil, fmt.Errorf("announcing %s: %w", vip, ErrNotIPv6)
	}
	vip = vip.WithZone("")
	na := &ndp.NeighborAdvertisement{
		Override:      true,
		TargetAddress: vip,
		Options: []ndp.Option{&ndp.LinkLayerAddress{
			Direction: ndp.Target,
			Addr:      hw,
		}},
	}
	icmp, err := ndp.MarshalMessageChecksum(na, vip, AllNodes)
	if err != nil {
		return nil, fmt.Errorf("encoding neighbour advertisement for %s: %w", vip, err)
	}
	pkt := make([]byte, 40+len(icmp))
	pkt[0] = 6 << 4 // version 6, traffic class and flow label 0
	binary.BigEndian.PutUint16(pkt[4:6], uint16(len(icmp)))
	pkt[6] = 58 // next header: ICMPv6
	pkt[7] = hopLimit
	src, dst := vip.As16(), AllNodes.As16()
	copy(pkt[8:24], src[:])
	copy(pkt[24:40], dst[:])
	copy(pkt[40:], icmp)
	f := &ethernet.Frame{
		Destination: allNodesMAC,
		Source:      hw,
		EtherType:   ethernet.EtherTypeIPv6,
		Payload:     pkt,
	}
	fb, err := f.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("encoding Ethernet frame for %s: %w", vip, err)
	}
	return [][]byte{fb}, nil
}
