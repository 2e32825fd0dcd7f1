package ndp

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"

	"github.com/vip-lb/vip/pkg/announce/internal/testconn"
)

var (
	mac = net.HardwareAddr{0x02, 0x00, 0x5e, 0x10, 0x00, 0x01}
	vip = netip.MustParseAddr("fd00:77::200")
)

// checksum is the RFC 1071 sum over the IPv6 pseudo-header and the ICMPv6
// message; it is 0 for a correct message.
func checksum(src, dst netip.Addr, icmp []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for len(b) >= 2 {
			sum += uint32(binary.BigEndian.Uint16(b))
			b = b[2:]
		}
		if len(b) == 1 {
			sum += uint32(b[0]) << 8
		}
	}
	s, d := src.As16(), dst.As16()
	add(s[:])
	add(d[:])
	var l [8]byte
	binary.BigEndian.PutUint32(l[:4], uint32(len(icmp)))
	l[7] = 58
	add(l[:])
	add(icmp)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

func TestSendWritesUnsolicitedAdvertisement(t *testing.T) {
	pc := testconn.New()
	c, err := NewConn(pc, mac, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Send(vip); err != nil {
		t.Fatal(err)
	}
	frames := pc.Frames()
	if len(frames) != FramesPerRound {
		t.Fatalf("got %d frames, want %d", len(frames), FramesPerRound)
	}
	var f ethernet.Frame
	if err := f.UnmarshalBinary(frames[0].Data); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(f.Destination, net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}) || !bytes.Equal(f.Source, mac) || f.EtherType != ethernet.EtherTypeIPv6 {
		t.Fatalf("Ethernet %s -> %s type %v", f.Source, f.Destination, f.EtherType)
	}
	ip := f.Payload
	if len(ip) < 40 || ip[0]>>4 != 6 || ip[6] != 58 || ip[7] != 255 {
		t.Fatalf("bad IPv6 header % x", ip[:min(len(ip), 40)])
	}
	plen := int(binary.BigEndian.Uint16(ip[4:6]))
	if plen != len(ip)-40 {
		t.Fatalf("payload length %d, have %d bytes", plen, len(ip)-40)
	}
	src, _ := netip.AddrFromSlice(ip[8:24])
	dst, _ := netip.AddrFromSlice(ip[24:40])
	if src != vip || dst != AllNodes {
		t.Errorf("IPv6 %s -> %s, want %s -> %s", src, dst, vip, AllNodes)
	}
	icmp := ip[40:]
	if got := checksum(src, dst, icmp); got != 0 {
		t.Errorf("ICMPv6 checksum does not verify (residue %#04x)", got)
	}
	m, err := ndp.ParseMessage(icmp)
	if err != nil {
		t.Fatal(err)
	}
	na, ok := m.(*ndp.NeighborAdvertisement)
	if !ok {
		t.Fatalf("got %T, want *ndp.NeighborAdvertisement", m)
	}
	if !na.Override || na.Solicited || na.Router || na.TargetAddress != vip {
		t.Errorf("NA flags/target: %+v", na)
	}
	if len(na.Options) != 1 {
		t.Fatalf("got %d options, want 1", len(na.Options))
	}
	lla, ok := na.Options[0].(*ndp.LinkLayerAddress)
	if !ok || lla.Direction != ndp.Target || !bytes.Equal(lla.Addr, mac) {
		t.Errorf("option %+v, want target link-layer address %s", na.Options[0], mac)
	}
}

func TestRejectsIPv4(t *testing.T) {
	c, err := NewConn(testconn.New(), mac, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, a := range []string{"10.0.0.1", "::ffff:10.0.0.1"} {
		if err := c.Send(netip.MustParseAddr(a)); !errors.Is(err, ErrNotIPv6) {
			t.Errorf("%s: got %v, want ErrNotIPv6", a, err)
		}
	}
	s := New(Options{})
	defer s.Close()
	if err := s.Burst(context.Background(), "eth0", netip.MustParseAddr("10.0.0.1"), 1, 0); !errors.Is(err, ErrNotIPv6) {
		t.Errorf("Sender: got %v, want ErrNotIPv6", err)
	}
}

func TestBurst(t *testing.T) {
	pc := testconn.New()
	sent := make(chan int, 8)
	s := New(Options{
		Interface: func(name string) (*net.Interface, error) {
			return &net.Interface{Index: 2, Name: name, HardwareAddr: mac}, nil
		},
		Listen: func(*net.Interface) (net.PacketConn, error) { return pc, nil },
		Sent:   func(n int) { sent <- n },
	})
	defer s.Close()
	if err := s.Burst(context.Background(), "eth0", vip, 3, 15*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if got := len(pc.Frames()); got != 1 {
		t.Fatalf("after Burst returned: %d frames, want 1", got)
	}
	if got := len(pc.WaitFrames(3, 2*time.Second)); got != 3 {
		t.Fatalf("got %d frames, want 3", got)
	}
	for range 3 {
		if n := <-sent; n != 1 {
			t.Errorf("Sent hook got %d, want 1", n)
		}
	}
}
