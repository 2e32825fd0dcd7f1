//go:build e2e

package e2e

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vip-lb/vip/e2e/internal/benchout"
	"github.com/vip-lb/vip/e2e/lab"
	"github.com/vip-lb/vip/pkg/dhcp"
	"github.com/vip-lb/vip/pkg/lbsvc"
)

// BenchmarkDHCP measures DHCP-sourced Services in the lab with dnsmasq
// (figures only, no targets): create → address in status over 10 Services,
// and owner failover keeping the address over 10 port cuts.
func BenchmarkDHCP(b *testing.B) {
	l := l2Lab(b, lab.Options{AgentArgs: []string{"--settle-time=" + l2BenchSettle}})
	srv, err := l.StartDHCP(l2Ctx(b, 30*time.Second))
	if err != nil {
		b.Fatal(err)
	}
	bs := &l2Bench{l: l, done: map[string][]l2Metric{}}
	b.Run("CreateToStatus", func(b *testing.B) { bs.once(b, func() []l2Metric { return dhcpCreateToStatus(b, l) }) })
	b.Run("Failover", func(b *testing.B) { bs.once(b, func() []l2Metric { return dhcpFailover(b, bs, srv) }) })
}

// dhcpCreateToStatus creates 10 0.0.0.0 Services one after the other and
// times, for each, the DHCP record on its Lease and the address in status
// (both polled every 10 ms).
func dhcpCreateToStatus(b *testing.B, l *lab.Lab) []l2Metric {
	const n = 10
	var toRecord, toStatus, recordToStatus []time.Duration
	for i := range n {
		s := &dhcpSuite{l: l, key: fmt.Sprintf("default/dhcp-bench-%d", i)}
		ctx := l2Ctx(b, time.Minute)
		t0 := time.Now()
		if _, err := l.CreateService(ctx, s.ns(), s.name(), dhcpRequest()); err != nil {
			b.Fatal(err)
		}
		var rec time.Duration
		_, err := s.waitStatus(ctx, func(a []netip.Addr) bool {
			if rec == 0 {
				le, err := l.Admin.CoordinationV1().Leases(lab.AgentNamespace).Get(ctx, lbsvc.DHCPLeaseName(s.ns(), s.name()), metav1.GetOptions{})
				if err == nil && le.Annotations[lbsvc.AnnotationDHCPAddress] != "" {
					rec = time.Since(t0)
				}
			}
			return len(a) > 0
		})
		if err != nil {
			b.Fatalf("%s: %v\n%s", s.key, err, l.Logs(30))
		}
		st := time.Since(t0)
		if rec == 0 || rec > st {
			rec = st // seen together within one poll
		}
		toRecord, toStatus, recordToStatus = append(toRecord, rec), append(toStatus, st), append(recordToStatus, st-rec)
	}
	for i := range n {
		if err := l.DeleteService(l2Ctx(b, time.Minute), "default", fmt.Sprintf("dhcp-bench-%d", i)); err != nil {
			b.Error(err)
		}
	}
	med := func(ds []time.Duration) time.Duration { return l2Pct(ds, 0.5) }
	if err := benchout.Write(b.Name(),
		fmt.Sprintf("%d Services with kube-vip.io/loadbalancerIPs: 0.0.0.0 created one after the other; dnsmasq on the lab segment", n),
		fmt.Sprintf("create -> DHCP record on the Service Lease: median %s, worst %s", l2Secs(med(toRecord)), l2Secs(slices.Max(toRecord))),
		fmt.Sprintf("create -> address in status: median %s, worst %s", l2Secs(med(toStatus)), l2Secs(slices.Max(toStatus))),
		fmt.Sprintf("record -> status (vip-ccm): median %s, worst %s", l2Secs(med(recordToStatus)), l2Secs(slices.Max(recordToStatus))),
		"create -> status (s): "+l2Durs(toStatus),
	); err != nil {
		b.Error(err)
	}
	return []l2Metric{{med(toStatus).Seconds(), "s-create-to-status-median"}, {slices.Max(toStatus).Seconds(), "s-create-to-status-worst"},
		{med(recordToStatus).Seconds(), "s-record-to-status-median"}}
}

// dhcpFailover cuts the owner's bridge port 10 times (the Service returns
// home between runs): the successor leases the same address with the same
// MAC; the client-observed outage is measured as in BenchmarkL2/Failover.
func dhcpFailover(b *testing.B, bs *l2Bench, srv *lab.DHCPServer) []l2Metric {
	const runs = 10
	l := bs.l
	s := &dhcpSuite{l: l, srv: srv, key: "default/dhcp-failover"}
	ctx := l2Ctx(b, time.Minute)
	if _, err := l.CreateService(ctx, s.ns(), s.name(), dhcpRequest()); err != nil {
		b.Fatal(err)
	}
	addrs, err := s.waitStatus(ctx, func(a []netip.Addr) bool { return len(a) > 0 })
	if err != nil {
		b.Fatal(err)
	}
	sv := l2Service{NS: s.ns(), Name: s.name(), VIP: addrs[0]}
	home := l2Holders(b, l, []l2Service{sv})[sv.Name]
	if _, err := l.WaitServedBy(ctx, sv.VIP, lab.ServicePort, func(n string) bool { return n == home }); err != nil {
		b.Fatal(err)
	}
	outages, leases, fails := bs.handoffRuns(b, runs, sv, home, l.CutPort, l.RestorePort)
	if st, err := s.waitStatus(ctx, func([]netip.Addr) bool { return true }); err != nil || !slices.Equal(st, addrs) {
		b.Errorf("status after %d failovers: %v (%v), want %v", runs, st, err, addrs)
	}
	if leased, ok, _ := srv.LeaseFor(dhcp.MAC(s.key).String()); !ok || leased != sv.VIP {
		b.Errorf("dnsmasq holds %v (%v), want %s", leased, ok, sv.VIP)
	}
	med, worst := l2Pct(outages, 0.5), slices.Max(outages)
	if err := benchout.Write(b.Name(),
		fmt.Sprintf("DHCP Service (0.0.0.0): owner's bridge port cut, %d runs; client probes VIP:80 every 10ms (50ms connect timeout)", runs),
		"outage = first failed probe -> first probe answered by the new owner, which leased the same address",
		fmt.Sprintf("outage median %s, worst %s; status unchanged throughout", l2Secs(med), l2Secs(worst)),
		fmt.Sprintf("Lease taken over after the cut: median %s, worst %s", l2Secs(l2Pct(leases, 0.5)), l2Secs(slices.Max(leases))),
		"outages (s): "+l2Durs(outages),
		fmt.Sprintf("failed probes per run: %v", fails),
	); err != nil {
		b.Error(err)
	}
	return []l2Metric{{med.Seconds(), "s-outage-median"}, {worst.Seconds(), "s-outage-worst"}}
}
