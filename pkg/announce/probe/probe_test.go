package probe_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"

	"github.com/vip-lb/vip/pkg/announce"
	"github.com/vip-lb/vip/pkg/announce/internal/nstest"
	"github.com/vip-lb/vip/pkg/announce/probe"
)

// TestProbe runs the prober in namespace A of a veth pair; namespace B is
// a foreign host that owns some addresses.
func TestProbe(t *testing.T) {
	nstest.RequireRoot(t)
	p := nstest.NewPair(t)
	p.B.MustExec(t, "ip", "addr", "add", "10.66.0.50/24", "dev", nstest.Iface)
	p.B.MustExec(t, "ip", "addr", "add", "fd00:66::50/64", "dev", nstest.Iface, "nodad")
	pr := probe.New(probe.Options{})
	for _, tc := range []struct {
		name string
		vip  string
		want net.HardwareAddr // nil: nobody answers
	}{
		{"IPv4 owned by another host", "10.66.0.50", p.B.MAC(t)},
		{"IPv4 free", "10.66.0.51", nil},
		{"IPv6 owned by another host", "fd00:66::50", p.B.MAC(t)},
		{"IPv6 free", "fd00:66::51", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got net.HardwareAddr
			err := p.A.Do(func() (err error) {
				got, err = pr.Probe(context.Background(), netip.MustParseAddr(tc.vip), nstest.Iface)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if got.String() != tc.want.String() {
				t.Fatalf("Probe(%s) = %v, want %v", tc.vip, got, tc.want)
			}
		})
	}
	// The prober's own addresses do not count as another host.
	err := p.A.Do(func() error {
		got, err := pr.Probe(context.Background(), nstest.A4, nstest.Iface)
		if err == nil && got != nil {
			t.Errorf("own address %s answered by %v", nstest.A4, got)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pr.Probe(context.Background(), netip.MustParseAddr("10.66.0.52"), "no-such-if0"); err == nil {
		t.Error("probe on a missing interface: no error")
	}
}

// BenchmarkProbe measures what a probe adds to a first announcement: a free
// address costs the whole timeout, an address in use only the round trip.
func BenchmarkProbe(b *testing.B) {
	nstest.RequireRoot(b)
	p := nstest.NewPair(b)
	p.B.MustExec(b, "ip", "addr", "add", "10.66.0.60/24", "dev", nstest.Iface)
	pr := probe.New(probe.Options{})
	for _, bc := range []struct{ name, vip string }{{"free", "10.66.0.61"}, {"inUse", "10.66.0.60"}} {
		b.Run(bc.name, func(b *testing.B) {
			var total time.Duration
			for b.Loop() {
				t0 := time.Now()
				if err := p.A.Do(func() error {
					_, err := pr.Probe(context.Background(), netip.MustParseAddr(bc.vip), nstest.Iface)
					return err
				}); err != nil {
					b.Fatal(err)
				}
				total += time.Since(t0)
			}
			b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/probe")
		})
	}
}

// recordingConn is a packet connection on which nobody ever answers: each
// read times out at once. It records the probes sent and the read
// deadlines set, and its Close blocks until released.
type recordingConn struct {
	mu        sync.Mutex
	writes    int
	deadlines []time.Time
	release   chan struct{}
	closed    chan struct{}
}

func (c *recordingConn) ReadFrom([]byte) (int, net.Addr, error) {
	return 0, nil, os.ErrDeadlineExceeded
}
func (c *recordingConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes++
	return len(b), nil
}
func (c *recordingConn) Close() error {
	<-c.release
	close(c.closed)
	return nil
}
func (c *recordingConn) LocalAddr() net.Addr              { return &net.UDPAddr{} }
func (c *recordingConn) SetDeadline(time.Time) error      { return nil }
func (c *recordingConn) SetWriteDeadline(time.Time) error { return nil }
func (c *recordingConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadlines = append(c.deadlines, t)
	return nil
}

// TestProbeBudget: the budget bounds the whole probe by construction. Both
// probes are sent, the second half-way; the last read deadline lies within
// the budget minus the margin, counted from the call (socket setup
// included); a context deadline that comes earlier cuts the listening and
// yields no verdict; and Probe returns while the socket is still closing.
func TestProbeBudget(t *testing.T) {
	nstest.RequireRoot(t)
	p := nstest.NewPair(t)
	const budget = 300 * time.Millisecond
	const margin = 10 * time.Millisecond
	for _, tc := range []struct {
		name    string
		ctxWait time.Duration // 0: no context deadline
	}{{"budget", 0}, {"context deadline first", 100 * time.Millisecond}} {
		t.Run(tc.name, func(t *testing.T) {
			c := &recordingConn{release: make(chan struct{}), closed: make(chan struct{})}
			pr := probe.New(probe.Options{Timeout: budget, Listen: func(*net.Interface, int) (net.PacketConn, error) { return c, nil }})
			ctx := context.Background()
			t0 := time.Now()
			if tc.ctxWait > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithDeadline(ctx, t0.Add(tc.ctxWait))
				defer cancel()
			}
			var mac net.HardwareAddr
			err := p.A.Do(func() (err error) {
				mac, err = pr.Probe(ctx, netip.MustParseAddr("10.66.0.77"), nstest.Iface)
				return err
			})
			t1 := time.Now()
			if err != nil || mac != nil {
				t.Fatalf("Probe = %v, %v; want nobody answering", mac, err)
			}
			select {
			case <-c.closed:
				t.Fatal("the socket was closed before Probe returned")
			default:
			}
			close(c.release)
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.writes != 2 || len(c.deadlines) != 2 {
				t.Fatalf("%d probes sent, read deadlines %v; want 2 and 2", c.writes, c.deadlines)
			}
			end := budget - margin
			if tc.ctxWait > 0 {
				end = tc.ctxWait
			}
			last, second := c.deadlines[1], c.deadlines[0]
			if last.Before(t0.Add(end)) || last.After(t1.Add(end)) {
				t.Errorf("listening ends %v after the call, want %v from the start of the call", last.Sub(t0), end)
			}
			if tc.ctxWait > 0 && !last.Equal(t0.Add(tc.ctxWait)) {
				t.Errorf("listening ends at %v, want the context deadline %v", last, t0.Add(tc.ctxWait))
			}
			if half := last.Sub(second); second.Before(t0) || half > end/2+time.Millisecond || half < end/2-(t1.Sub(t0)) {
				t.Errorf("second probe %v before the end of listening, want about half of %v", half, end)
			}
		})
	}
}

// BenchmarkFirstAnnouncement measures the delay of a first announcement:
// from the decision to announce a free address to the first gratuitous ARP
// another host on the link (namespace B) receives, with and without the
// probe (default budget, nobody answers) in front of the announcement.
// Custom metrics: mean, p50 and p99 of that delay.
func BenchmarkFirstAnnouncement(b *testing.B) {
	nstest.RequireRoot(b)
	p := nstest.NewPair(b)
	ctx := context.Background()
	var l *announce.Layer2
	if err := p.A.Do(func() (err error) {
		l, err = announce.NewLayer2(announce.Options{StatePath: filepath.Join(b.TempDir(), "state.json")})
		if err != nil {
			return err
		}
		// Open the packet socket here, in A; later calls may run anywhere.
		w := netip.MustParseAddr("10.66.0.250")
		if err := l.Announce(ctx, "warm-up", w, ""); err != nil {
			return err
		}
		return l.Withdraw(ctx, "warm-up", w)
	}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = l.Close() })
	seen := garpWatch(b, p)
	pr := probe.New(probe.Options{})
	for _, bc := range []struct {
		name  string
		probe bool
	}{{"noProbe", false}, {"probe", true}} {
		b.Run(bc.name, func(b *testing.B) {
			var delays []time.Duration
			vip := netip.MustParseAddr("10.66.0.100")
			for b.Loop() {
				t0 := time.Now()
				if err := p.A.Do(func() error {
					if bc.probe {
						if mac, err := pr.Probe(ctx, vip, nstest.Iface); err != nil || mac != nil {
							return fmt.Errorf("probe of the free %s: %v, %v", vip, mac, err)
						}
					}
					return l.Announce(ctx, "svc", vip, nstest.Iface)
				}); err != nil {
					b.Fatal(err)
				}
				at, err := seen.first(vip, t0, 5*time.Second)
				if err != nil {
					b.Fatal(err)
				}
				delays = append(delays, at.Sub(t0))
				b.StopTimer()
				if err := l.Withdraw(ctx, "svc", vip); err != nil {
					b.Fatal(err)
				}
				if vip = vip.Next(); vip == netip.MustParseAddr("10.66.0.200") {
					vip = netip.MustParseAddr("10.66.0.100")
				}
				b.StartTimer()
			}
			var sum time.Duration
			for _, d := range delays {
				sum += d
			}
			slices.Sort(delays)
			b.ReportMetric(float64(sum.Microseconds())/1000/float64(len(delays)), "ms-mean")
			b.ReportMetric(float64(delays[len(delays)/2].Microseconds())/1000, "ms-p50")
			b.ReportMetric(float64(delays[min(len(delays)-1, len(delays)*99/100)].Microseconds())/1000, "ms-p99")
		})
	}
}

// garps records when namespace B receives gratuitous ARPs.
type garps struct {
	mu   sync.Mutex
	seen map[netip.Addr][]time.Time
}

func garpWatch(b *testing.B, p *nstest.Pair) *garps {
	b.Helper()
	g := &garps{seen: map[netip.Addr][]time.Time{}}
	var pc *packet.Conn
	if err := p.B.Do(func() error {
		ifi, err := net.InterfaceByName(nstest.Iface)
		if err != nil {
			return err
		}
		pc, err = packet.Listen(ifi, packet.Raw, int(ethernet.EtherTypeARP), nil)
		return err
	}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = pc.Close() })
	go func() {
		buf := make([]byte, 1600)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			at := time.Now()
			var f ethernet.Frame
			var a arp.Packet
			if f.UnmarshalBinary(buf[:n]) != nil || a.UnmarshalBinary(f.Payload) != nil || a.SenderIP != a.TargetIP {
				continue
			}
			g.mu.Lock()
			g.seen[a.SenderIP] = append(g.seen[a.SenderIP], at)
			g.mu.Unlock()
		}
	}()
	return g
}

// first returns when B first received a gratuitous ARP for vip at or after
// since, waiting up to timeout for it.
func (g *garps) first(vip netip.Addr, since time.Time, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		g.mu.Lock()
		for _, at := range g.seen[vip] {
			if !at.Before(since) {
				g.mu.Unlock()
				return at, nil
			}
		}
		g.mu.Unlock()
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("no gratuitous ARP for %s within %v", vip, timeout)
		}
		time.Sleep(200 * time.Microsecond)
	}
}
