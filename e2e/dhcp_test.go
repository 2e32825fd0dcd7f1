//go:build e2e

package e2e

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vip-lb/vip/e2e/lab"
	"github.com/vip-lb/vip/pkg/dhcp"
	"github.com/vip-lb/vip/pkg/lbsvc"
)

// TestDHCP: Services requesting 0.0.0.0 get their address from dnsmasq on
// the lab segment. One lab, subtests in order: lease → status → traffic,
// renewals, DHCP server down for a while, owner node cut off (the successor
// keeps the address), Service deleted (lease released, macvlan gone).
func TestDHCP(t *testing.T) {
	// Namespace "home" has kube-vip-cloud-provider's DHCP marker as its pool.
	l := l2Lab(t, lab.Options{Pools: map[string]string{"cidr-home": "0.0.0.0/32"}, Namespaces: []string{"home"}})
	srv, err := l.StartDHCP(l2Ctx(t, 30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dnsmasq log:\n%s", srv.Proc.Tail(40))
		}
	})
	s := &dhcpSuite{l: l, srv: srv, key: "default/dhcp1"}
	for _, st := range []struct {
		name string
		f    func(*testing.T)
	}{
		{"LeaseToStatus", s.leaseToStatus},
		{"Renewal", s.renewal},
		{"ServerDown", s.serverDown},
		{"OwnerCutOff", s.ownerCutOff},
		{"OwnerStopped", s.ownerStopped},
		{"OwnerKilledRestarted", s.ownerKilledRestarted},
		{"Deleted", s.deleted},
		{"MarkerPool", s.markerPool},
	} {
		if !t.Run(st.name, st.f) && st.name == "LeaseToStatus" {
			t.Fatal("the DHCP Service the other subtests use could not be set up")
		}
	}
}

type dhcpSuite struct {
	l     *lab.Lab
	srv   *lab.DHCPServer
	key   string
	vip   netip.Addr
	owner string
}

func (s *dhcpSuite) ns() string   { return strings.SplitN(s.key, "/", 2)[0] }
func (s *dhcpSuite) name() string { return strings.SplitN(s.key, "/", 2)[1] }
func (s *dhcpSuite) mac() string  { return dhcp.MAC(s.key).String() }

func dhcpRequest() lab.ServiceOption {
	return func(svc *v1.Service) {
		svc.Annotations = map[string]string{lbsvc.AnnotationLoadBalancerIPs: "0.0.0.0"}
	}
}

// waitStatus polls the Service every 10 ms until its status satisfies ok.
func (s *dhcpSuite) waitStatus(ctx context.Context, ok func([]netip.Addr) bool) ([]netip.Addr, error) {
	var got []netip.Addr
	err := lab.Poll(ctx, 10*time.Millisecond, func() (bool, error) {
		svc, err := s.l.Admin.CoreV1().Services(s.ns()).Get(ctx, s.name(), metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		got = lab.Ingress(svc)
		return ok(got), nil
	})
	return got, err
}

func (s *dhcpSuite) events(t *testing.T, reason string) []string {
	return l2Events(t, s.l, l2Service{NS: s.ns(), Name: s.name()}, reason)
}

// waitEvent waits for an Event of reason on the Service whose message
// contains sub (earlier Events of the reason, e.g. a failed first acquire,
// do not count) and returns its message.
func (s *dhcpSuite) waitEvent(t *testing.T, reason, sub string, d time.Duration) string {
	t.Helper()
	var msg string
	var seen []string
	err := lab.Poll(l2Ctx(t, d), 100*time.Millisecond, func() (bool, error) {
		seen = s.events(t, reason)
		i := slices.IndexFunc(seen, func(m string) bool { return strings.Contains(m, sub) })
		if i >= 0 {
			msg = seen[i]
		}
		return i >= 0, nil
	})
	if err != nil {
		t.Fatalf("no %s Event containing %q on %s within %v (%v); got %q", reason, sub, s.key, d, err, seen)
	}
	return msg
}

// leaseToStatus: the Service gets an address from the DHCP range in its
// status, dnsmasq holds that lease for the Service's derived MAC, the
// Service Lease records it, and the client reaches the owner on it.
func (s *dhcpSuite) leaseToStatus(t *testing.T) {
	l := s.l
	ctx := l2Ctx(t, 2*time.Minute)
	t0 := time.Now()
	if _, err := l.CreateService(ctx, s.ns(), s.name(), dhcpRequest()); err != nil {
		t.Fatal(err)
	}
	// Both the Lease record and the status are polled every 10 ms, for the
	// lease → status figure.
	var recorded time.Duration
	addrs, err := s.waitStatus(ctx, func(a []netip.Addr) bool {
		if recorded == 0 {
			if le, err := l.Admin.CoordinationV1().Leases(lab.AgentNamespace).Get(ctx, lbsvc.DHCPLeaseName(s.ns(), s.name()), metav1.GetOptions{}); err == nil &&
				le.Annotations[lbsvc.AnnotationDHCPAddress] != "" {
				recorded = time.Since(t0)
			}
		}
		return len(a) > 0
	})
	if err != nil {
		t.Fatalf("no address in status: %v\n%s", err, l.Logs(40))
	}
	toStatus := time.Since(t0)
	if len(addrs) != 1 || addrs[0].Compare(s.srv.First) < 0 || addrs[0].Compare(s.srv.Last) > 0 {
		t.Fatalf("status %v: want one address in the DHCP range %s-%s", addrs, s.srv.First, s.srv.Last)
	}
	s.vip = addrs[0]
	leased, ok, err := s.srv.LeaseFor(s.mac())
	if err != nil || !ok || leased != s.vip {
		t.Fatalf("dnsmasq lease for %s: %v %v %v; want %s", s.mac(), leased, ok, err, s.vip)
	}
	lease, err := l.Admin.CoordinationV1().Leases(lab.AgentNamespace).Get(ctx, lbsvc.DHCPLeaseName(s.ns(), s.name()), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rec, ok, err := lbsvc.ParseDHCPRecord(lease.Annotations)
	if !ok || err != nil || rec.Addr != s.vip || rec.MAC.String() != s.mac() || lease.Labels[lbsvc.LabelDHCP] != "true" {
		t.Fatalf("Lease record %v %v %v, labels %v; want %s with MAC %s", rec, ok, err, lease.Labels, s.vip, s.mac())
	}
	s.owner = *lease.Spec.HolderIdentity
	served, err := l.WaitServedBy(ctx, s.vip, lab.ServicePort, func(string) bool { return true })
	if err != nil {
		t.Fatalf("client cannot reach %s: %v\n%s", s.vip, err, l.Logs(40))
	}
	reached := time.Since(t0)
	if served != s.owner {
		t.Errorf("answered by %s, Lease held by %s", served, s.owner)
	}
	links, err := l.Links(s.owner)
	if err != nil || !slices.Contains(links, dhcp.LinkName(s.key)) {
		t.Errorf("owner %s links %v (%v): want macvlan %s", s.owner, links, err, dhcp.LinkName(s.key))
	}
	if ev := s.events(t, "DHCPLeaseObtained"); len(ev) == 0 {
		t.Errorf("no DHCPLeaseObtained Event")
	}
	t.Logf("%s: create → lease recorded on the Lease %v, → status %s %v, client reached %s %v", s.key,
		recorded.Round(time.Millisecond), s.vip, toStatus.Round(time.Millisecond), s.owner, reached.Round(time.Millisecond))
}

// renewal: the owner renews at T1 (8 s in the lab); the address stays.
func (s *dhcpSuite) renewal(t *testing.T) {
	l := s.l
	ctx := l2Ctx(t, time.Minute)
	renewals := func() float64 {
		v, err := l.AgentMetric(ctx, s.owner, "vip_agent_dhcp_renewals_total", nil)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	before := renewals()
	err := lab.Poll(ctx, 250*time.Millisecond, func() (bool, error) { return renewals() > before, nil })
	if err != nil {
		t.Fatalf("no renewal within a minute (T1 is %v): %v", lab.DHCPT1, err)
	}
	if leased, ok, _ := s.srv.LeaseFor(s.mac()); !ok || leased != s.vip {
		t.Errorf("after renewal dnsmasq holds %v (%v), want %s", leased, ok, s.vip)
	}
	if _, err := l.ClientGet(ctx, s.vip, lab.ServicePort, time.Second); err != nil {
		t.Errorf("client after renewal: %v", err)
	}
}

// serverDown: dnsmasq stopped past T1: renewals fail, a Warning Event says
// so, and the address keeps working while the lease is valid; once dnsmasq
// is back the lease is renewed.
func (s *dhcpSuite) serverDown(t *testing.T) {
	l := s.l
	ctx := l2Ctx(t, 2*time.Minute)
	if err := s.srv.Stop(); err != nil {
		t.Fatal(err)
	}
	// The renewal failure says the address is kept.
	s.waitEvent(t, "DHCPFailed", s.vip.String()+" kept until", lab.DHCPT2+30*time.Second)
	if _, err := l.ClientGet(ctx, s.vip, lab.ServicePort, time.Second); err != nil {
		t.Errorf("client while the DHCP server is down: %v", err)
	}
	if st, err := s.waitStatus(ctx, func([]netip.Addr) bool { return true }); err != nil || !slices.Equal(st, []netip.Addr{s.vip}) {
		t.Errorf("status while the DHCP server is down: %v %v", st, err)
	}
	failures, err := l.AgentMetric(ctx, s.owner, "vip_agent_dhcp_failures_total", nil)
	if err != nil || failures == 0 {
		t.Errorf("vip_agent_dhcp_failures_total = %v (%v), want > 0", failures, err)
	}
	before, _ := l.AgentMetric(ctx, s.owner, "vip_agent_dhcp_renewals_total", nil)
	if err := s.srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	err = lab.Poll(ctx, 250*time.Millisecond, func() (bool, error) {
		v, err := l.AgentMetric(ctx, s.owner, "vip_agent_dhcp_renewals_total", nil)
		return v > before, err
	})
	if err != nil {
		t.Fatalf("no renewal after dnsmasq came back: %v", err)
	}
	if leased, ok, _ := s.srv.LeaseFor(s.mac()); !ok || leased != s.vip {
		t.Errorf("after the outage dnsmasq holds %v (%v), want %s", leased, ok, s.vip)
	}
}

// ownerCutOff: the owner's bridge port is cut; another node takes the
// Service over with the same MAC and client ID, gets the same address, and
// the client reaches it there. Status never changes.
func (s *dhcpSuite) ownerCutOff(t *testing.T) {
	l := s.l
	ctx := l2Ctx(t, 2*time.Minute)
	old := s.owner
	t0 := time.Now()
	if err := l.CutPort(old); err != nil {
		t.Fatal(err)
	}
	defer l2Restore(t, l, old)
	served, err := l.WaitServedBy(ctx, s.vip, lab.ServicePort, func(n string) bool { return n != old })
	if err != nil {
		t.Fatalf("client never reached %s on another node: %v\n%s", s.vip, err, l.Logs(40))
	}
	outage := time.Since(t0)
	h, err := l.WaitHolder(ctx, s.ns(), s.name(), func(h string) bool { return h != "" && h != old })
	if err != nil || h != served {
		t.Errorf("Lease holder %q (%v), answered by %s", h, err, served)
	}
	if st, err := s.waitStatus(ctx, func([]netip.Addr) bool { return true }); err != nil || !slices.Equal(st, []netip.Addr{s.vip}) {
		t.Errorf("status after failover %v (%v), want %s", st, err, s.vip)
	}
	if leased, ok, _ := s.srv.LeaseFor(s.mac()); !ok || leased != s.vip {
		t.Errorf("dnsmasq holds %v (%v) for %s after failover, want %s", leased, ok, s.mac(), s.vip)
	}
	s.owner = served
	t.Logf("%s moved %s → %s keeping %s; client outage %v", s.key, old, served, s.vip, outage.Round(time.Millisecond))
	l2Restore(t, l, old)
	// Back on the segment, the old owner gives up its macvlan.
	err = lab.Poll(ctx, 100*time.Millisecond, func() (bool, error) {
		links, err := l.Links(old)
		return err == nil && !slices.Contains(links, dhcp.LinkName(s.key)), err
	})
	if err != nil {
		t.Errorf("the former owner %s keeps macvlan %s: %v", old, dhcp.LinkName(s.key), err)
	}
	if served, err := l.WaitServedBy(ctx, s.vip, lab.ServicePort, func(string) bool { return true }); err != nil {
		t.Errorf("client after the old owner came back: %v", err)
	} else if h, _, _ := l.LeaseHolder(ctx, s.ns(), s.name()); served != h {
		t.Errorf("answered by %s, Lease held by %s", served, h)
	}
}

// ownerStopped: SIGTERM of the owner's agent (a rolling update): it
// withdraws and removes its macvlan without releasing, hands the Service
// over, and the successor gets the same address.
func (s *dhcpSuite) ownerStopped(t *testing.T) {
	l := s.l
	ctx := l2Ctx(t, 2*time.Minute)
	old := s.owner
	t0 := time.Now()
	if err := l.StopAgent(old, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	served, err := l.WaitServedBy(ctx, s.vip, lab.ServicePort, func(n string) bool { return n != old })
	if err != nil {
		t.Fatalf("client never reached %s on another node: %v\n%s", s.vip, err, l.Logs(40))
	}
	outage := time.Since(t0)
	if links, err := l.Links(old); err != nil || slices.Contains(links, dhcp.LinkName(s.key)) {
		t.Errorf("stopped agent left macvlan %s on %s: %v %v", dhcp.LinkName(s.key), old, links, err)
	}
	if leased, ok, _ := s.srv.LeaseFor(s.mac()); !ok || leased != s.vip {
		t.Errorf("dnsmasq holds %v (%v) after the hand-off, want %s (not released)", leased, ok, s.vip)
	}
	if st, err := s.waitStatus(ctx, func([]netip.Addr) bool { return true }); err != nil || !slices.Equal(st, []netip.Addr{s.vip}) {
		t.Errorf("status after hand-off %v (%v), want %s", st, err, s.vip)
	}
	s.owner = served
	t.Logf("%s handed %s → %s keeping %s; time to the first answer from %s: %v", s.key, old, served, s.vip, served,
		outage.Round(time.Millisecond))
	if err := l.StartAgent(ctx, old); err != nil {
		t.Fatal(err)
	}
}

// ownerKilledRestarted: SIGKILL of the owner's agent and an immediate
// restart (what the kubelet does): the new agent removes the macvlan the
// old one left, and the Service ends up served on its address by its
// Lease holder, with one macvlan on the segment.
func (s *dhcpSuite) ownerKilledRestarted(t *testing.T) {
	l := s.l
	ctx := l2Ctx(t, 2*time.Minute)
	old := s.owner
	if err := l.StopAgent(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if links, _ := l.Links(old); !slices.Contains(links, dhcp.LinkName(s.key)) {
		t.Fatalf("expected the killed agent to leave its macvlan, links %v", links)
	}
	if err := l.StartAgent(ctx, old); err != nil {
		t.Fatal(err)
	}
	err := lab.Poll(ctx, 100*time.Millisecond, func() (bool, error) {
		h, _, err := l.LeaseHolder(ctx, s.ns(), s.name())
		if err != nil || h == "" {
			return false, err
		}
		n := 0
		for _, node := range l.Nodes {
			links, err := l.Links(node.Name)
			if err != nil {
				return false, err
			}
			if slices.Contains(links, dhcp.LinkName(s.key)) {
				n++
				if node.Name != h {
					return false, nil
				}
			}
		}
		return n == 1, nil
	})
	if err != nil {
		t.Fatalf("never exactly one macvlan, on the Lease holder: %v", err)
	}
	h, _, _ := l.LeaseHolder(ctx, s.ns(), s.name())
	if served, err := l.WaitServedBy(ctx, s.vip, lab.ServicePort, func(n string) bool { return n == h }); err != nil {
		t.Fatalf("client never reached %s on the holder %s: %v", s.vip, h, err)
	} else {
		s.owner = served
	}
	if st, err := s.waitStatus(ctx, func([]netip.Addr) bool { return true }); err != nil || !slices.Equal(st, []netip.Addr{s.vip}) {
		t.Errorf("status %v (%v), want %s", st, err, s.vip)
	}
}

// markerPool: a Service without a request in a namespace whose pool is
// the 0.0.0.0/32 marker gets its address by DHCP too.
func (s *dhcpSuite) markerPool(t *testing.T) {
	l := s.l
	ctx := l2Ctx(t, time.Minute)
	m := &dhcpSuite{l: l, srv: s.srv, key: "home/web"}
	if _, err := l.CreateService(ctx, m.ns(), m.name()); err != nil {
		t.Fatal(err)
	}
	addrs, err := m.waitStatus(ctx, func(a []netip.Addr) bool { return len(a) > 0 })
	if err != nil || len(addrs) != 1 {
		t.Fatalf("status %v: %v\n%s", addrs, err, l.Logs(30))
	}
	if leased, ok, _ := s.srv.LeaseFor(m.mac()); !ok || leased != addrs[0] {
		t.Fatalf("status %s, dnsmasq lease for %s: %v %v", addrs[0], m.mac(), leased, ok)
	}
	if _, err := l.WaitServedBy(ctx, addrs[0], lab.ServicePort, func(string) bool { return true }); err != nil {
		t.Fatalf("client cannot reach %s: %v", addrs[0], err)
	}
	if err := l.DeleteService(ctx, m.ns(), m.name()); err != nil {
		t.Fatal(err)
	}
	err = lab.Poll(ctx, 100*time.Millisecond, func() (bool, error) {
		_, ok, err := s.srv.LeaseFor(m.mac())
		return !ok, err
	})
	if err != nil {
		t.Errorf("lease of %s not released: %v", m.key, err)
	}
}

// deleted: deleting the Service releases the lease (dnsmasq's lease file
// forgets the MAC) and removes the macvlan from every node.
func (s *dhcpSuite) deleted(t *testing.T) {
	l := s.l
	ctx := l2Ctx(t, time.Minute)
	if err := l.DeleteService(ctx, s.ns(), s.name()); err != nil {
		t.Fatal(err)
	}
	err := lab.Poll(ctx, 100*time.Millisecond, func() (bool, error) {
		_, ok, err := s.srv.LeaseFor(s.mac())
		return !ok, err
	})
	if err != nil {
		t.Errorf("dnsmasq still holds a lease for %s: %v", s.mac(), err)
	}
	err = lab.Poll(ctx, 100*time.Millisecond, func() (bool, error) {
		for _, n := range l.Nodes {
			links, err := l.Links(n.Name)
			if err != nil {
				return false, err
			}
			if slices.ContainsFunc(links, func(s string) bool { return strings.HasPrefix(s, dhcp.LinkPrefix) }) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Errorf("a macvlan is left: %v", err)
	}
	if err := l.ClientPing(ctx, s.vip); err == nil {
		t.Errorf("%s still answers after the Service was deleted", s.vip)
	}
}

// TestDDNS: vip-agent in control-plane mode with --ddns and a DNS name as
// --address on two nodes: the Lease holder takes a DHCP lease sending the
// name as host name, dnsmasq registers it in its DNS, the agents resolve
// the name to the leased address and the holder announces it; the client
// resolves the name through dnsmasq and reaches the holder on it.
func TestDDNS(t *testing.T) {
	l := l2Lab(t, lab.Options{})
	ctx := l2Ctx(t, 3*time.Minute)
	srv, err := l.StartDHCP(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const name = "k8s-api.lab"
	t0 := time.Now()
	agents := map[string]*lab.Proc{}
	for _, n := range []string{"node1", "node2"} {
		p, cleanup, err := l.StartControlPlaneAgent(n, srv.IP, "--address", name, "--ddns", "--address-refresh", "1s")
		t.Cleanup(cleanup)
		if err != nil {
			t.Fatal(err)
		}
		agents[n] = p
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("%s:\n%s", p.Name, p.Tail(40))
			}
		})
	}
	res := srv.Resolver(l.Client)
	var vip netip.Addr
	err = lab.Poll(ctx, 100*time.Millisecond, func() (bool, error) {
		addrs, err := res.LookupNetIP(ctx, "ip4", name)
		if err != nil || len(addrs) == 0 {
			return false, nil
		}
		vip = addrs[0].Unmap()
		return true, nil
	})
	if err != nil {
		t.Fatalf("%s never resolved through dnsmasq: %v\ndnsmasq:\n%s", name, err, srv.Proc.Tail(30))
	}
	resolved := time.Since(t0)
	if vip.Compare(srv.First) < 0 || vip.Compare(srv.Last) > 0 {
		t.Fatalf("%s resolves to %s, outside the DHCP range", name, vip)
	}
	served, err := l.WaitServedBy(ctx, vip, lab.ServicePort, func(string) bool { return true })
	if err != nil {
		t.Fatalf("client cannot reach %s (%s): %v", name, vip, err)
	}
	mac := dhcp.MAC("control-plane/" + name).String()
	if leased, ok, _ := srv.LeaseFor(mac); !ok || leased != vip {
		t.Errorf("dnsmasq lease for %s: %v %v, want %s", mac, leased, ok, vip)
	}
	t.Logf("%s → %s held by %s: resolvable after %v, reached after %v", name, vip, served,
		resolved.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))

	// The holder's agent stops: the other node takes the Lease, leases the
	// same address with the same MAC, and the name keeps resolving to it.
	t1 := time.Now()
	if err := agents[served].Stop(syscall.SIGTERM, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	next, err := l.WaitServedBy(ctx, vip, lab.ServicePort, func(n string) bool { return n != served })
	if err != nil {
		t.Fatalf("client never reached %s on the other node: %v", vip, err)
	}
	addrs, err := res.LookupNetIP(ctx, "ip4", name)
	if err != nil || len(addrs) != 1 || addrs[0].Unmap() != vip {
		t.Errorf("after the hand-over %s resolves to %v (%v), want %s", name, addrs, err, vip)
	}
	if leased, ok, _ := srv.LeaseFor(mac); !ok || leased != vip {
		t.Errorf("dnsmasq lease for %s after the hand-over: %v %v, want %s", mac, leased, ok, vip)
	}
	t.Logf("%s holder %s stopped: %s answers on %s after %v", name, served, next, vip, time.Since(t1).Round(time.Millisecond))
}
