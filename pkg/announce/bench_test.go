package announce_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"

	"github.com/vip-lb/vip/pkg/announce"
	"github.com/vip-lb/vip/pkg/announce/internal/nstest"
)

// sniffer records when B first sees a gratuitous ARP for each address.
type sniffer struct {
	pc   *packet.Conn
	mu   sync.Mutex
	seen map[netip.Addr]time.Time
}

func newSniffer(b *testing.B, p *nstest.Pair) *sniffer {
	b.Helper()
	s := &sniffer{seen: map[netip.Addr]time.Time{}}
	err := p.B.Do(func() error {
		ifi, err := net.InterfaceByName(nstest.Iface)
		if err != nil {
			return err
		}
		if s.pc, err = packet.Listen(ifi, packet.Raw, int(ethernet.EtherTypeARP), nil); err != nil {
			return err
		}
		rc, err := s.pc.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 64<<20)
		}); err != nil {
			return err
		}
		return serr
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.pc.Close() })
	go s.read()
	return s
}

func (s *sniffer) read() {
	buf := make([]byte, 1500)
	for {
		n, _, err := s.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		at := time.Now()
		var f ethernet.Frame
		var a arp.Packet
		if f.UnmarshalBinary(buf[:n]) != nil || a.UnmarshalBinary(f.Payload) != nil || a.SenderIP != a.TargetIP {
			continue
		}
		s.mu.Lock()
		if _, ok := s.seen[a.SenderIP]; !ok {
			s.seen[a.SenderIP] = at
		}
		s.mu.Unlock()
	}
}

// wait returns the first-seen times once all of want were seen, or after timeout.
func (s *sniffer) wait(want int, timeout time.Duration) map[netip.Addr]time.Time {
	deadline := time.Now().Add(timeout)
	for {
		s.mu.Lock()
		n := len(s.seen)
		s.mu.Unlock()
		if n >= want || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.seen
	s.seen = map[netip.Addr]time.Time{}
	return out
}

func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// BenchmarkAnnounce1000 announces 1000 IPv4 VIPs (interface found by route
// lookup, state file appended, first GARP round sent) from namespace A, one
// after another as a single agent worker would, and withdraws them between
// iterations. One op is the whole batch of 1000. Custom metrics: Announce
// call latency, call start to the first frame seen in B, and batch start to
// the first frame in B (the wait of the last Service in the queue).
func BenchmarkAnnounce1000(b *testing.B) { benchAnnounce(b, 1) }

// BenchmarkAnnounce1000Workers4 is BenchmarkAnnounce1000 with four callers
// sharing the batch, as an agent with four workers would.
func BenchmarkAnnounce1000Workers4(b *testing.B) { benchAnnounce(b, 4) }

func benchAnnounce(b *testing.B, workers int) {
	const n = 1000
	p := nstest.NewPair(b)
	p.A.MustExec(b, "ip", "addr", "add", "10.67.0.1/20", "dev", nstest.Iface)
	p.B.MustExec(b, "ip", "addr", "add", "10.67.0.2/20", "dev", nstest.Iface)
	vips := make([]netip.Addr, n)
	owners := make([]string, n)
	v := netip.MustParseAddr("10.67.1.0")
	for i := range vips {
		vips[i], owners[i] = v, fmt.Sprintf("ns/svc-%d", i)
		v = v.Next()
	}
	ctx := context.Background()
	var l *announce.Layer2
	if err := p.A.Do(func() (err error) {
		l, err = announce.NewLayer2(announce.Options{StatePath: filepath.Join(b.TempDir(), "state.json")})
		if err != nil {
			return err
		}
		// Open the packet socket here, in A; later calls may run anywhere.
		if err := l.Announce(ctx, "warm-up", netip.MustParseAddr("10.67.0.200"), ""); err != nil {
			return err
		}
		return l.Withdraw(ctx, "warm-up", netip.MustParseAddr("10.67.0.200"))
	}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = l.Close() })
	sn := newSniffer(b, p)
	sn.wait(1, time.Second)

	// each runs fn(i) for every i in [0,n), spread over the workers.
	each := func(fn func(i int) error) error {
		var wg sync.WaitGroup
		errs := make([]error, workers)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < n; i += workers {
					if err := fn(i); err != nil {
						errs[w] = err
						return
					}
				}
			}()
		}
		wg.Wait()
		return errors.Join(errs...)
	}

	var call, wire, wireFromBatch []time.Duration
	var missing int
	for b.Loop() {
		starts := make([]time.Time, n)
		took := make([]time.Duration, n)
		batch := time.Now()
		if err := each(func(i int) error {
			starts[i] = time.Now()
			err := l.Announce(ctx, owners[i], vips[i], "")
			took[i] = time.Since(starts[i])
			return err
		}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		call = append(call, took...)
		seen := sn.wait(n, 3*time.Second)
		for i, v := range vips {
			at, ok := seen[v]
			if !ok {
				missing++
				continue
			}
			wire = append(wire, at.Sub(starts[i]))
			wireFromBatch = append(wireFromBatch, at.Sub(batch))
		}
		if err := each(func(i int) error { return l.Withdraw(ctx, owners[i], vips[i]) }); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(quantile(call, 0.5).Nanoseconds()), "p50-announce-ns")
	b.ReportMetric(float64(quantile(call, 0.99).Nanoseconds()), "p99-announce-ns")
	b.ReportMetric(float64(quantile(wire, 0.99).Nanoseconds()), "p99-call-to-wire-ns")
	b.ReportMetric(float64(quantile(wireFromBatch, 0.99).Nanoseconds()), "p99-batch-to-wire-ns")
	b.ReportMetric(float64(missing), "frames-missed")
}
