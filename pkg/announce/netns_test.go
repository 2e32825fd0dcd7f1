package announce_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vip-lb/vip/pkg/announce"
	"github.com/vip-lb/vip/pkg/announce/internal/nstest"
)

// These tests run the announcer inside namespace A of an nstest.Pair and
// observe from namespace B. They skip unless run as root.

// wrongMAC pre-seeds B's neighbour entry, like a previous holder would have.
const wrongMAC = "02:00:00:00:00:01"

// newLayer2 returns a Layer2 working in namespace A. Packet sockets are
// opened on first use in the namespace of the calling thread, so every call
// that may send must run through p.A.Do.
func newLayer2(t testing.TB, p *nstest.Pair, statePath string) *announce.Layer2 {
	t.Helper()
	var l *announce.Layer2
	err := p.A.Do(func() (err error) {
		l, err = announce.NewLayer2(announce.Options{
			Handle:     p.A.Netlink,
			StatePath:  statePath,
			Interval:   20 * time.Millisecond,
			Registerer: prometheus.NewRegistry(),
		})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func announceIn(p *nstest.Pair, l *announce.Layer2, owner string, vip netip.Addr) error {
	return p.A.Do(func() error { return l.Announce(context.Background(), owner, vip, "") })
}

// serveOnce accepts one TCP connection on vip:port inside A and writes a greeting.
func serveOnce(t *testing.T, p *nstest.Pair, vip netip.Addr) string {
	t.Helper()
	var ln net.Listener
	if err := p.A.Do(func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(vip, 8080).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		_, _ = c.Write([]byte("hello from A\n"))
		_ = c.Close()
	}()
	return ln.Addr().String()
}

// dialFromB connects to addr from namespace B and returns the first line.
func dialFromB(p *nstest.Pair, addr string) (string, error) {
	var line string
	err := p.B.Do(func() error {
		c, err := net.DialTimeout("tcp", addr, 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		line, err = bufio.NewReader(c).ReadString('\n')
		return err
	})
	return strings.TrimSpace(line), err
}

func TestNetworkIPv4Failover(t *testing.T) {
	p := nstest.NewPair(t)
	vip := netip.MustParseAddr("10.66.0.100")
	// B still points the VIP at a previous holder: the failover case.
	p.B.MustExec(t, "ip", "neigh", "replace", vip.String(), "lladdr", wrongMAC, "dev", nstest.Iface, "nud", "stale")
	l := newLayer2(t, p, filepath.Join(t.TempDir(), "state.json"))

	start := time.Now()
	if err := announceIn(p, l, "svc-a", vip); err != nil {
		t.Fatal(err)
	}
	t.Logf("Announce took %v", time.Since(start))
	macA := p.A.MAC(t)
	if !p.B.WaitNeigh(t, vip, macA, 2*time.Second) {
		t.Fatalf("B's entry for %s is %s, want A's %s", vip, p.B.Neigh(t, vip), macA)
	}
	t.Logf("B learned A's MAC %v after Announce started", time.Since(start))
	p.B.MustExec(t, "ping", "-c1", "-W2", vip.String())
	addr := serveOnce(t, p, vip)
	if got, err := dialFromB(p, addr); err != nil || got != "hello from A" {
		t.Fatalf("TCP from B to %s: %q, %v", addr, got, err)
	}

	if err := p.A.Do(func() error { return l.Withdraw(context.Background(), "svc-a", vip) }); err != nil {
		t.Fatal(err)
	}
	if ok, _ := p.A.HasAddr(t, vip); ok {
		t.Fatal("address still on A after Withdraw")
	}
	if h := l.Held(); len(h) != 0 {
		t.Fatalf("Held %v after Withdraw", h)
	}
}

func TestNetworkIPv4ArpAccept(t *testing.T) {
	p := nstest.NewPair(t)
	vip := netip.MustParseAddr("10.66.0.101")
	// With arp_accept=1 a GARP creates the entry B does not have yet.
	p.B.MustExec(t, "sysctl", "-qw", "net.ipv4.conf."+nstest.Iface+".arp_accept=1")
	l := newLayer2(t, p, filepath.Join(t.TempDir(), "state.json"))
	if err := announceIn(p, l, "svc-a", vip); err != nil {
		t.Fatal(err)
	}
	if !p.B.WaitNeigh(t, vip, p.A.MAC(t), 2*time.Second) {
		t.Fatalf("B did not learn %s from the GARP: %s", vip, p.B.Neigh(t, vip))
	}
}

func TestNetworkIPv6Failover(t *testing.T) {
	p := nstest.NewPair(t)
	vip := netip.MustParseAddr("fd00:66::100")
	// A NA only updates an entry a plain host already has.
	p.B.MustExec(t, "ip", "-6", "neigh", "replace", vip.String(), "lladdr", wrongMAC, "dev", nstest.Iface, "nud", "stale")
	l := newLayer2(t, p, filepath.Join(t.TempDir(), "state.json"))
	if err := announceIn(p, l, "svc-a", vip); err != nil {
		t.Fatal(err)
	}
	macA := p.A.MAC(t)
	if !p.B.WaitNeigh(t, vip, macA, 2*time.Second) {
		t.Fatalf("B's entry for %s is %s, want A's %s", vip, p.B.Neigh(t, vip), macA)
	}
	p.B.MustExec(t, "ping", "-6", "-c1", "-W2", vip.String())
	addr := serveOnce(t, p, vip)
	if got, err := dialFromB(p, addr); err != nil || got != "hello from A" {
		t.Fatalf("TCP from B to %s: %q, %v", addr, got, err)
	}
	if err := p.A.Do(func() error { return l.Withdraw(context.Background(), "svc-a", vip) }); err != nil {
		t.Fatal(err)
	}
	if ok, _ := p.A.HasAddr(t, vip); ok {
		t.Fatal("address still on A after Withdraw")
	}
}

func TestNetworkSharedAndClose(t *testing.T) {
	p := nstest.NewPair(t)
	v4 := netip.MustParseAddr("10.66.0.110")
	v6 := netip.MustParseAddr("fd00:66::110")
	l := newLayer2(t, p, filepath.Join(t.TempDir(), "state.json"))
	for _, owner := range []string{"svc-a", "svc-b"} {
		for _, v := range []netip.Addr{v4, v6} {
			if err := announceIn(p, l, owner, v); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := p.A.Do(func() error { return l.Withdraw(context.Background(), "svc-a", v4) }); err != nil {
		t.Fatal(err)
	}
	if ok, _ := p.A.HasAddr(t, v4); !ok {
		t.Fatal("shared address removed while svc-b still holds it")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for _, v := range []netip.Addr{v4, v6} {
		if ok, _ := p.A.HasAddr(t, v); ok {
			t.Errorf("%s still on A after Close", v)
		}
	}
	for _, v := range []netip.Addr{nstest.A4, nstest.A6} {
		if ok, _ := p.A.HasAddr(t, v); !ok {
			t.Errorf("Close removed A's own address %s", v)
		}
	}
}

func TestNetworkRestartCleansUp(t *testing.T) {
	p := nstest.NewPair(t)
	state := filepath.Join(t.TempDir(), "state.json")
	v4 := netip.MustParseAddr("10.66.0.120")
	v6 := netip.MustParseAddr("fd00:66::120")
	crashed := newLayer2(t, p, state)
	for _, v := range []netip.Addr{v4, v6} {
		if err := announceIn(p, crashed, "svc-a", v); err != nil {
			t.Fatal(err)
		}
	}
	// The agent dies without Close; its successor starts with Cleanup.
	next := newLayer2(t, p, state)
	if err := next.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, v := range []netip.Addr{v4, v6} {
		if ok, _ := p.A.HasAddr(t, v); ok {
			t.Errorf("leftover %s survived Cleanup", v)
		}
	}
	if err := announceIn(p, next, "svc-a", v4); err != nil {
		t.Fatal(err)
	}
	if ok, _ := p.A.HasAddr(t, v4); !ok {
		t.Error("announcing again after Cleanup did not bind")
	}
}

func TestNetworkForeignAddress(t *testing.T) {
	p := nstest.NewPair(t)
	l := newLayer2(t, p, filepath.Join(t.TempDir(), "state.json"))
	for _, v := range []netip.Addr{nstest.A4, nstest.A6} {
		if err := announceIn(p, l, "svc-a", v); !errors.Is(err, announce.ErrForeignAddress) {
			t.Errorf("Announce(%s) = %v, want ErrForeignAddress", v, err)
		}
	}
	if h := l.Held(); len(h) != 0 {
		t.Errorf("Held %v", h)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for _, v := range []netip.Addr{nstest.A4, nstest.A6} {
		if ok, _ := p.A.HasAddr(t, v); !ok {
			t.Errorf("%s, A's own address, was removed", v)
		}
	}
}
