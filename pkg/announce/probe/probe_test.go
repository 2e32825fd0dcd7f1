package probe_test

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

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
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/probe")
		})
	}
}
