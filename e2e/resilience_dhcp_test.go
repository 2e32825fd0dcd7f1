//go:build e2e

package e2e

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/vip-lb/vip/e2e/lab"
)

// dhcpServerGone: a Service whose address came from DHCP (0.0.0.0) keeps
// it, and keeps answering, while the DHCP server is gone past T2; the
// owner says so with a Warning Event and a metric, and renews once the
// server is back.
func (s *resSuite) dhcpServerGone(t *testing.T, row *resRow) {
	l := s.l
	srv, err := l.StartDHCP(l2Ctx(t, 30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Stop() }()
	d := &dhcpSuite{l: l, srv: srv, key: fmt.Sprintf("%s/dhcp-%d", lab.ScaleNamespace, s.n)}
	s.n++
	ctx := l2Ctx(t, 3*time.Minute)
	if _, err := l.CreateService(ctx, d.ns(), d.name(), dhcpRequest()); err != nil {
		t.Fatal(err)
	}
	addrs, err := d.waitStatus(ctx, func(a []netip.Addr) bool { return len(a) > 0 })
	if err != nil || len(addrs) != 1 {
		t.Fatalf("DHCP Service status %v: %v", addrs, err)
	}
	vip := addrs[0]
	owner, err := l.WaitServedBy(ctx, vip, lab.ServicePort, func(string) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	p := l.StartProbe(vip, lab.ServicePort, 100*time.Millisecond, healthyProbeTimeout)
	down := time.Now()
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	// The renewal failure says the address is kept.
	d.waitEvent(t, "DHCPFailed", "kept until", lab.DHCPT2+30*time.Second)
	// Past T2: rebinding fails too, the address stays while the lease is valid.
	if wait := time.Until(down.Add(lab.DHCPT2 + 2*time.Second)); wait > 0 {
		time.Sleep(wait)
	}
	if f, err := l.AgentMetric(ctx, owner, "vip_agent_dhcp_failures_total", nil); err != nil || f == 0 {
		t.Errorf("vip_agent_dhcp_failures_total on %s = %v (%v), want > 0", owner, f, err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	if err := lab.Poll(ctx, 250*time.Millisecond, func() (bool, error) {
		leased, ok, _ := srv.LeaseFor(d.mac())
		return ok && leased == vip, nil
	}); err != nil {
		t.Errorf("lease for %s not renewed after the DHCP server returned: %v", vip, err)
	}
	rs := p.Stop()
	noFailures(t, row, rs, "DHCP server gone")
	if st, err := d.waitStatus(ctx, func([]netip.Addr) bool { return true }); err != nil || !slices.Equal(st, []netip.Addr{vip}) {
		t.Errorf("status after the DHCP outage: %v (%v), want [%s]", st, err, vip)
	}
	row.note("server gone %v (past T2 = %v); Warning DHCPFailed; lease renewed %v after its return", back.Sub(down).Round(time.Second),
		lab.DHCPT2, time.Since(back).Round(time.Millisecond))
	if err := l.DeleteService(ctx, d.ns(), d.name()); err != nil {
		t.Fatal(err)
	}
}
