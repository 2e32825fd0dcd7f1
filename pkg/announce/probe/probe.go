// Package probe asks the link whether another host already uses an address
// before vip announces it for the first time: an RFC 5227 ARP probe (sender
// IP 0.0.0.0) for IPv4, a neighbour solicitation as in duplicate address
// detection (source ::, to the solicited-node multicast group) for IPv6.
// A host that has the address answers; its MAC is returned.
package probe

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

// DefaultTimeout is a probe's whole budget: what it adds, at most, to the
// first announcement of an address.
const DefaultTimeout = 300 * time.Millisecond

// margin is the part of the budget left unused at its end, for the timer
// that ends the listening and the return to the caller to fire and run
// late (a loaded node schedules a few milliseconds late).
func margin(budget time.Duration) time.Duration { return min(budget/30, 10*time.Millisecond) }

// ErrNoInterface means the interface to probe on could not be found.
var ErrNoInterface = errors.New("no interface to probe on")

// Options configure a Prober.
type Options struct {
	// Timeout is the probe's whole budget (default 300ms): finding the
	// interface, opening the socket, sending and listening all end within
	// it, so it bounds what the probe adds to a first announcement. Two
	// probes are sent, at the start and half-way through the listening,
	// which stops a small margin (1/30, at most 10ms) before the budget is
	// spent; the socket is closed in the background.
	Timeout time.Duration
	// InterfaceFor names the interface that covers an address, used when
	// Probe is given no interface (the announcer's own lookup).
	InterfaceFor func(netip.Addr) (string, error)
	// Listen opens the packet connection; nil opens an AF_PACKET socket.
	Listen func(ifi *net.Interface, proto int) (net.PacketConn, error)
}

// Prober sends probes. It is safe for concurrent use.
type Prober struct{ o Options }

// New returns a Prober.
func New(o Options) *Prober {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Listen == nil {
		o.Listen = func(ifi *net.Interface, proto int) (net.PacketConn, error) {
			return packet.Listen(ifi, packet.Raw, proto, nil)
		}
	}
	return &Prober{o: o}
}

// Probe asks the link on iface ("" = the interface covering vip) whether a
// host other than this one answers for vip. It returns that host's MAC, or
// nil when nobody answered. It returns within the Timeout budget (or ctx's
// deadline, if earlier) of being called.
func (p *Prober) Probe(ctx context.Context, vip netip.Addr, iface string) (net.HardwareAddr, error) {
	start := time.Now() // the budget bounds the whole call, socket setup included
	deadline := start.Add(p.o.Timeout - margin(p.o.Timeout))
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	vip = vip.Unmap().WithZone("")
	if iface == "" && p.o.InterfaceFor != nil {
		var err error
		if iface, err = p.o.InterfaceFor(vip); err != nil {
			return nil, fmt.Errorf("probing %s: %w: %w", vip, ErrNoInterface, err)
		}
	}
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("probing %s on %q: %w: %w", vip, iface, ErrNoInterface, err)
	}
	proto, frame, match := unix.ETH_P_ARP, arpProbe, arpAnswer
	if vip.Is6() {
		proto, frame, match = unix.ETH_P_IPV6, nsProbe, naAnswer
	}
	out, err := frame(ifi.HardwareAddr, vip)
	if err != nil {
		return nil, fmt.Errorf("probing %s: %w", vip, err)
	}
	pc, err := p.o.Listen(ifi, proto)
	if err != nil {
		return nil, fmt.Errorf("probing %s on %s: %w", vip, iface, err)
	}
	// Closing an AF_PACKET socket waits for an RCU grace period (4-17 ms
	// measured): not on the caller's time.
	defer func() { go pc.Close() }()
	own := localMACs()
	dst := &packet.Addr{HardwareAddr: net.HardwareAddr(out[0:6])}
	second := time.Now().Add(time.Until(deadline) / 2)
	if _, err := pc.WriteTo(out, dst); err != nil {
		return nil, fmt.Errorf("sending the probe for %s on %s: %w", vip, iface, err)
	}
	sentTwice := false
	buf := make([]byte, 1600)
	for {
		until := deadline
		if !sentTwice && second.Before(until) {
			until = second
		}
		if err := pc.SetReadDeadline(until); err != nil {
			return nil, err
		}
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				return nil, fmt.Errorf("reading answers to the probe for %s: %w", vip, err)
			}
			if time.Now().Before(deadline) && !sentTwice {
				sentTwice = true
				_, _ = pc.WriteTo(out, dst)
				continue
			}
			// Cut short by ctx: not a full probe, so no verdict.
			return nil, ctx.Err()
		}
		if mac := match(buf[:n], vip); mac != nil && !own[mac.String()] {
			return mac, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
}

// localMACs lists this host's interface MACs: answers from them are ours.
func localMACs() map[string]bool {
	out := map[string]bool{}
	ifs, _ := net.Interfaces()
	for _, i := range ifs {
		if len(i.HardwareAddr) > 0 {
			out[i.HardwareAddr.String()] = true
		}
	}
	return out
}

// arpProbe is an RFC 5227 ARP probe for vip from hw: a broadcast request
// with sender IP 0.0.0.0 and an empty target MAC.
func arpProbe(hw net.HardwareAddr, vip netip.Addr) ([]byte, error) {
	p, err := arp.NewPacket(arp.OperationRequest, hw, netip.IPv4Unspecified(), make(net.HardwareAddr, 6), vip)
	if err != nil {
		return nil, err
	}
	pb, err := p.MarshalBinary()
	if err != nil {
		return nil, err
	}
	f := &ethernet.Frame{Destination: ethernet.Broadcast, Source: hw, EtherType: ethernet.EtherTypeARP, Payload: pb}
	return f.MarshalBinary()
}

// arpAnswer returns the sender MAC of an ARP packet that claims vip.
func arpAnswer(frame []byte, vip netip.Addr) net.HardwareAddr {
	var f ethernet.Frame
	if err := f.UnmarshalBinary(frame); err != nil || f.EtherType != ethernet.EtherTypeARP {
		return nil
	}
	var p arp.Packet
	if err := p.UnmarshalBinary(f.Payload); err != nil || p.SenderIP != vip {
		return nil
	}
	return p.SenderHardwareAddr
}

// nsProbe is a duplicate-address-detection neighbour solicitation for vip:
// source ::, to vip's solicited-node multicast group, no link-layer option.
func nsProbe(hw net.HardwareAddr, vip netip.Addr) ([]byte, error) {
	snm, err := ndp.SolicitedNodeMulticast(vip)
	if err != nil {
		return nil, err
	}
	src := netip.IPv6Unspecified()
	icmp, err := ndp.MarshalMessageChecksum(&ndp.NeighborSolicitation{TargetAddress: vip}, src, snm)
	if err != nil {
		return nil, err
	}
	pkt := make([]byte, 40+len(icmp))
	pkt[0] = 6 << 4
	binary.BigEndian.PutUint16(pkt[4:6], uint16(len(icmp)))
	pkt[6] = 58  // ICMPv6
	pkt[7] = 255 // hop limit required by NDP
	s, d := src.As16(), snm.As16()
	copy(pkt[8:24], s[:])
	copy(pkt[24:40], d[:])
	copy(pkt[40:], icmp)
	mac := net.HardwareAddr{0x33, 0x33, d[12], d[13], d[14], d[15]}
	f := &ethernet.Frame{Destination: mac, Source: hw, EtherType: ethernet.EtherTypeIPv6, Payload: pkt}
	return f.MarshalBinary()
}

// naAnswer returns the source MAC of a neighbour advertisement for vip.
func naAnswer(frame []byte, vip netip.Addr) net.HardwareAddr {
	var f ethernet.Frame
	if err := f.UnmarshalBinary(frame); err != nil || f.EtherType != ethernet.EtherTypeIPv6 || len(f.Payload) < 40 {
		return nil
	}
	pl := int(binary.BigEndian.Uint16(f.Payload[4:6]))
	if f.Payload[6] != 58 || len(f.Payload) < 40+pl {
		return nil
	}
	m, err := ndp.ParseMessage(f.Payload[40 : 40+pl])
	if err != nil {
		return nil
	}
	na, ok := m.(*ndp.NeighborAdvertisement)
	if !ok || na.TargetAddress.WithZone("") != vip {
		return nil
	}
	for _, o := range na.Options {
		if ll, ok := o.(*ndp.LinkLayerAddress); ok && ll.Direction == ndp.Target && len(ll.Addr) == 6 {
			return ll.Addr
		}
	}
	return f.Source
}
