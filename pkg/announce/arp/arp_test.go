package arp

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/vip-lb/vip/pkg/announce/internal/testconn"
)

var (
	mac = net.HardwareAddr{0x02, 0x00, 0x5e, 0x10, 0x00, 0x01}
	vip = netip.MustParseAddr("10.77.0.200")
)

// decode parses one frame as Ethernet carrying ARP.
func decode(t *testing.T, b []byte) (*ethernet.Frame, *arp.Packet) {
	t.Helper()
	var f ethernet.Frame
	if err := f.UnmarshalBinary(b); err != nil {
		t.Fatalf("decoding Ethernet: %v", err)
	}
	var p arp.Packet
	if err := p.UnmarshalBinary(f.Payload); err != nil {
		t.Fatalf("decoding ARP: %v", err)
	}
	return &f, &p
}

func TestSendWritesRequestAndReply(t *testing.T) {
	pc := testconn.New()
	sent := 0
	c, err := NewConn(pc, mac, Options{Sent: func(n int) { sent += n }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Send(vip); err != nil {
		t.Fatal(err)
	}
	frames := pc.Frames()
	if len(frames) != FramesPerRound || sent != FramesPerRound {
		t.Fatalf("got %d frames, Sent hook %d; want %d", len(frames), sent, FramesPerRound)
	}
	wantOps := []arp.Operation{arp.OperationRequest, arp.OperationReply}
	wantTHA := []net.HardwareAddr{{0, 0, 0, 0, 0, 0}, mac}
	for i, fr := range frames {
		if len(fr.Data) < 60 {
			t.Errorf("frame %d is %d bytes, want padding to at least 60", i, len(fr.Data))
		}
		f, p := decode(t, fr.Data)
		if !bytes.Equal(f.Destination, ethernet.Broadcast) || !bytes.Equal(f.Source, mac) || f.EtherType != ethernet.EtherTypeARP {
			t.Errorf("frame %d: Ethernet %s -> %s type %v", i, f.Source, f.Destination, f.EtherType)
		}
		if p.Operation != wantOps[i] {
			t.Errorf("frame %d: operation %v, want %v", i, p.Operation, wantOps[i])
		}
		if p.SenderIP != vip || p.TargetIP != vip {
			t.Errorf("frame %d: sender %s target %s, want both %s", i, p.SenderIP, p.TargetIP, vip)
		}
		if !bytes.Equal(p.SenderHardwareAddr, mac) || !bytes.Equal(p.TargetHardwareAddr, wantTHA[i]) {
			t.Errorf("frame %d: sha %s tha %s, want %s %s", i, p.SenderHardwareAddr, p.TargetHardwareAddr, mac, wantTHA[i])
		}
	}
}

func TestSendRejectsIPv6(t *testing.T) {
	c, err := NewConn(testconn.New(), mac, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Send(netip.MustParseAddr("fd00::1")); !errors.Is(err, ErrNotIPv4) {
		t.Fatalf("got %v, want ErrNotIPv4", err)
	}
	if _, err := NewConn(testconn.New(), net.HardwareAddr{1, 2, 3}, Options{}); !errors.Is(err, ErrNotEthernet) {
		t.Fatalf("short MAC: got %v, want ErrNotEthernet", err)
	}
}

// TestBurstTiming: the first round is written before Burst returns, each
// further round only when the (fake) clock has moved by the interval, and
// nothing after the last one.
func TestBurstTiming(t *testing.T) {
	pc := testconn.New()
	clk := clocktesting.NewFakeClock(time.Unix(0, 0))
	c, err := NewConn(pc, mac, Options{Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const interval = 100 * time.Millisecond
	if err := c.Burst(context.Background(), vip, 3, interval); err != nil {
		t.Fatal(err)
	}
	// The clock has not moved: Burst did not wait for a round.
	if got := len(pc.Frames()); got != FramesPerRound {
		t.Fatalf("after Burst returned: %d frames, want the first round (%d) only", got, FramesPerRound)
	}
	for r := 2; r <= 3; r++ {
		waitUntil(t, "the next round's timer", clk.HasWaiters)
		clk.Step(interval - time.Nanosecond)
		if got := len(pc.Frames()); got != (r-1)*FramesPerRound {
			t.Fatalf("round %d written before its interval: %d frames", r, got)
		}
		clk.Step(time.Nanosecond)
		if got := len(pc.WaitFrames(r*FramesPerRound, time.Minute)); got != r*FramesPerRound {
			t.Fatalf("after %d intervals: %d frames, want %d", r-1, got, r*FramesPerRound)
		}
	}
	waitUntil(t, "the burst to end", func() bool { return !clk.HasWaiters() })
	c.Close()
	if got := len(pc.Frames()); got != 3*FramesPerRound {
		t.Errorf("%d frames after the burst ended, want %d", got, 3*FramesPerRound)
	}
}

// waitUntil polls cond with a generous deadline (an eventual condition,
// not a timing limit).
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: gave up", what)
		}
	}
}

func TestBurstStopsOnCancelAndClose(t *testing.T) {
	pc := testconn.New()
	clk := clocktesting.NewFakeClock(time.Unix(0, 0))
	c, err := NewConn(pc, mac, Options{Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := c.Burst(ctx, vip, 5, 20*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the burst's timer", clk.HasWaiters)
	cancel()
	// The cancelled burst leaves (its timer stopped) without another round,
	// even once its rounds are due.
	waitUntil(t, "the cancelled burst to leave", func() bool { return !clk.HasWaiters() })
	clk.Step(time.Second)
	if got := len(pc.Frames()); got != FramesPerRound {
		t.Errorf("cancelled burst wrote %d frames, want %d", got, FramesPerRound)
	}

	if err := c.Burst(context.Background(), vip, 5, 20*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// Close returns while the burst waits for its next round (the clock
	// never moves): it stops the burst rather than waiting for it.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if !pc.Closed() {
		t.Error("Close did not close the PacketConn")
	}
	if err := c.Burst(context.Background(), vip, 1, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("Burst after Close: got %v, want ErrClosed", err)
	}
}

func TestBurstReportsLaterFailures(t *testing.T) {
	pc := testconn.New()
	clk := clocktesting.NewFakeClock(time.Unix(0, 0))
	failed := make(chan error, 4)
	c, err := NewConn(pc, mac, Options{Clock: clk, Failed: func(_ netip.Addr, err error) { failed <- err }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Burst(context.Background(), vip, 3, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// The first round went out; the second waits for the (fake) clock, so
	// the failure always hits a later round however slow the machine is.
	waitUntil(t, "the burst's timer", clk.HasWaiters)
	pc.FailWith(syscall.ENETDOWN)
	clk.Step(10 * time.Millisecond)
	select {
	case err := <-failed:
		if !errors.Is(err, syscall.ENETDOWN) {
			t.Errorf("Failed got %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Failed hook not called")
	}
}

// fakeIfaces resolves names to interfaces with distinct MACs.
func fakeIfaces(name string) (*net.Interface, error) {
	switch name {
	case "eth0":
		return &net.Interface{Index: 2, Name: name, HardwareAddr: mac}, nil
	case "wg0":
		return &net.Interface{Index: 3, Name: name}, nil
	}
	return nil, errors.New("no such interface")
}

func TestSenderCachesAndReopens(t *testing.T) {
	var conns []*testconn.Conn
	s := New(Options{
		Interface: fakeIfaces,
		Listen: func(*net.Interface) (net.PacketConn, error) {
			c := testconn.New()
			conns = append(conns, c)
			return c, nil
		},
	})
	ctx := context.Background()
	for range 3 {
		if err := s.Burst(ctx, "eth0", vip, 1, 0); err != nil {
			t.Fatal(err)
		}
	}
	if len(conns) != 1 || len(conns[0].Frames()) != 3*FramesPerRound {
		t.Fatalf("opened %d conns; want 1 carrying %d frames", len(conns), 3*FramesPerRound)
	}
	// The interface vanished: the socket reports ENXIO and is reopened once.
	conns[0].FailWith(syscall.ENXIO)
	if err := s.Burst(ctx, "eth0", vip, 1, 0); err != nil {
		t.Fatal(err)
	}
	if len(conns) != 2 || !conns[0].Closed() || len(conns[1].Frames()) != FramesPerRound {
		t.Fatalf("after ENXIO: %d conns, first closed %v", len(conns), conns[0].Closed())
	}
	if err := s.Burst(ctx, "wg0", vip, 1, 0); !errors.Is(err, ErrNotEthernet) {
		t.Errorf("interface without MAC: got %v, want ErrNotEthernet", err)
	}
	if err := s.Burst(ctx, "eth0", netip.MustParseAddr("fd00::1"), 1, 0); !errors.Is(err, ErrNotIPv4) {
		t.Errorf("IPv6: got %v, want ErrNotIPv4", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if !conns[1].Closed() {
		t.Error("Close left a conn open")
	}
	if err := s.Burst(ctx, "eth0", vip, 1, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: got %v, want ErrClosed", err)
	}
}

func BenchmarkSend(b *testing.B) {
	c, err := NewConn(testconn.New(), mac, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Send(vip); err != nil {
			b.Fatal(err)
		}
	}
}
