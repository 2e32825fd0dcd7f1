//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vip-lb/vip/e2e/lab"
	"github.com/vip-lb/vip/pkg/lbsvc"
)

// addressInUse: another host on the link (the client namespace) already
// has an address of the pool; a Service asking for it is not announced by
// any node: the elected node's probe got the client's answer, a Warning
// AddressInUse names the client's MAC and the conflict record is written
// for vip-ccm. A Service on a free address is announced as usual (every
// other subtest).
func (s *l2Suite) addressInUse(t *testing.T) {
	l := s.l
	ctx := l2Ctx(t, time.Minute)
	taken := l.GlobalPool4().Addr().Next().Next().Next().Next().Next().Next() // .206
	cidr := taken.String() + "/16"
	if _, err := l.Exec(ctx, l.Client, "ip", "addr", "add", cidr, "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx := l2Ctx(t, 30*time.Second)
		if _, err := l.Exec(ctx, l.Client, "ip", "addr", "del", cidr, "dev", "eth0"); err != nil {
			t.Error(err)
		}
		_ = l.Admin.CoordinationV1().Leases(lab.AgentNamespace).Delete(ctx, lbsvc.ConflictLeaseName(taken), metav1.DeleteOptions{})
	}()
	if _, err := l.CreateService(ctx, "default", "taken", lab.Annotate(lbsvc.AnnotationLoadBalancerIPs, taken.String())); err != nil {
		t.Fatal(err)
	}
	sv := l2Service{NS: "default", Name: "taken", VIP: taken}
	defer func() {
		if err := l.DeleteService(l2Ctx(t, 30*time.Second), sv.NS, sv.Name); err != nil {
			t.Error(err)
		}
	}()
	var rec map[string]string
	if err := lab.Poll(ctx, 50*time.Millisecond, func() (bool, error) {
		le, err := l.Admin.CoordinationV1().Leases(lab.AgentNamespace).Get(ctx, lbsvc.ConflictLeaseName(taken), metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		rec = le.Annotations
		return true, nil
	}); err != nil {
		t.Fatalf("no conflict record for %s: %v\n%s", taken, err, l.Logs(30))
	}
	mac := strings.ToLower(l.ClientMAC)
	if rec[lbsvc.AnnotationAddress] != taken.String() || rec[lbsvc.AnnotationMAC] != mac || l.Node(rec[lbsvc.AnnotationNode]) == nil {
		t.Fatalf("conflict record %v: want address %s, MAC %s and a node", rec, taken, mac)
	}
	if err := lab.Poll(ctx, 50*time.Millisecond, func() (bool, error) {
		return slices.ContainsFunc(l2Events(t, l, sv, "AddressInUse"), func(m string) bool { return strings.Contains(m, mac) }), nil
	}); err != nil {
		t.Fatalf("no AddressInUse Event naming %s: %v", mac, l2Events(t, l, sv, "AddressInUse"))
	}
	for _, n := range l.Nodes {
		vips, err := l.NodeVIPs(n.Name)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(vips, taken) {
			t.Fatalf("%s bound %s although the client answered the probe", n.Name, taken)
		}
	}
	nb, err := l.ClientNeigh(taken)
	if err == nil && nb.MAC != "" && !strings.EqualFold(nb.MAC, mac) {
		t.Fatalf("client's neighbour entry for its own address %s points at %s", taken, nb.MAC)
	}
	t.Logf("%s owned by the client (%s): not announced; record by %s; %s", taken, mac, rec[lbsvc.AnnotationNode],
		fmt.Sprint(l2Events(t, l, sv, "AddressInUse")))
}

// TestL2ProbeRestart: an address another host answers for is never
// announced without a fresh probe, neither by a restarted agent that holds
// its Lease nor by a node that takes the Lease over. vip-ccm is stopped
// first, so nothing takes the address out of status (as with
// kube-vip-cloud-provider, or before vip-ccm has read the conflict record):
// the agents alone must keep it off the wire. A foreign host (the router
// namespace) has the address; the Service (externalTrafficPolicy Local,
// endpoint on node1 only) is elected to node1, which probes, refuses and
// records the conflict; node1's agent is killed by PID and started again
// and probes again (the record is renewed by node1 after the restart);
// then node2 gets an endpoint too, node1's agent is killed and stays down,
// and node2 takes the Lease over and probes too. Throughout no node binds
// the address and the client's neighbour entry for it never points at a
// node. Then vip-ccm comes back (quarantine 20 s) and takes the address out
// of status; the foreign host goes away; once the quarantine is over the
// address is in status again, probed, served, and its Lease marked
// announced by the node serving it.
func TestL2ProbeRestart(t *testing.T) {
	l := l2Lab(t, lab.Options{Nodes: 2, CCMArgs: []string{"--conflict-quarantine=20s", "--retry-after=2s"}})
	ctx := l2Ctx(t, 5*time.Minute)
	r, err := l.AddRouter()
	if err != nil {
		t.Fatal(err)
	}
	taken := l.GlobalPool4().Addr().Next().Next().Next() // .203
	cidr := taken.String() + "/16"
	if _, err := l.Exec(ctx, r.NS, "ip", "addr", "add", cidr, "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	if err := l.ClientPing(ctx, taken); err != nil {
		t.Fatalf("the foreign host does not answer for %s: %v", taken, err)
	}
	foreign, err := l.ClientNeigh(taken)
	if err != nil || foreign.MAC == "" || l.NodeByMAC(foreign.MAC) != nil {
		t.Fatalf("client neighbour entry for %s: %+v, %v", taken, foreign, err)
	}

	// vip-ccm down; the Service gets the address in status by hand.
	if err := l.CCM.Stop(syscall.SIGTERM, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if !l.CCM.Running() {
			_ = l.CCM.Start()
		}
	}()
	sv := l2Service{NS: "default", Name: "taken", VIP: taken}
	if _, err := l.CreateService(ctx, sv.NS, sv.Name, lab.Local(), lab.Annotate(lbsvc.AnnotationLoadBalancerIPs, taken.String())); err != nil {
		t.Fatal(err)
	}
	if err := l.SetEndpoints(ctx, sv.NS, sv.Name, "node1"); err != nil {
		t.Fatal(err)
	}
	setIngress(ctx, t, l, sv, taken.String())

	// Watch the wire: no node binds the address, the client's neighbour
	// entry never moves to a node (kept fresh by a ping every second).
	var violation atomic.Value
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if i%10 == 0 {
				_ = l.ClientPing(ctx, taken)
			}
			if on, err := l.BoundOn(taken); err == nil && len(on) > 0 {
				violation.CompareAndSwap(nil, fmt.Sprintf("%s bound %s", on, taken))
			}
			if nb, err := l.ClientNeigh(taken); err == nil {
				if n := l.NodeByMAC(nb.MAC); n != nil {
					violation.CompareAndSwap(nil, fmt.Sprintf("client's neighbour entry for %s points at %s (%s)", taken, n.Name, nb.MAC))
				}
			}
		}
	}()
	stopWatch := func() {
		select {
		case <-stop:
		default:
			close(stop)
			<-done
		}
	}
	defer stopWatch()

	rec := waitConflict(ctx, t, l, taken, time.Time{}, &violation)
	if !strings.EqualFold(rec.Annotations[lbsvc.AnnotationMAC], foreign.MAC) {
		t.Fatalf("conflict record names %s, want the foreign host's %s", rec.Annotations[lbsvc.AnnotationMAC], foreign.MAC)
	}
	if by := rec.Annotations[lbsvc.AnnotationNode]; by != "node1" {
		t.Fatalf("conflict recorded by %q, want node1 (the only candidate)", by)
	}
	// Restart: node1 still holds the Lease; the new process must probe.
	if err := l.StopAgent("node1", syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	if err := l.StartAgent(ctx, "node1"); err != nil {
		t.Fatal(err)
	}
	rec = waitConflict(ctx, t, l, taken, restarted, &violation)
	if by := rec.Annotations[lbsvc.AnnotationNode]; by != "node1" {
		t.Fatalf("after the restart the conflict was recorded by %q, want node1", by)
	}
	t.Logf("node1 killed and restarted: it probed %s again and refused it (record renewed %s)", taken,
		rec.Spec.RenewTime.UTC().Format(time.RFC3339Nano))
	// Takeover: node2 becomes a candidate, node1 dies; node2 must probe.
	if err := l.SetEndpoints(ctx, sv.NS, sv.Name, "node1", "node2"); err != nil {
		t.Fatal(err)
	}
	if err := l.StopAgent("node1", syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	if err := lab.Poll(ctx, 50*time.Millisecond, func() (bool, error) {
		if v := violation.Load(); v != nil {
			return false, fmt.Errorf("while another host had the address: %s", v)
		}
		le, err := l.Admin.CoordinationV1().Leases(lab.AgentNamespace).Get(ctx, lbsvc.ConflictLeaseName(taken), metav1.GetOptions{})
		return err == nil && le.Spec.RenewTime != nil && le.Spec.RenewTime.Time.After(killed) &&
			le.Annotations[lbsvc.AnnotationNode] == "node2", nil
	}); err != nil {
		t.Fatalf("node2 did not probe %s after taking it over: %v\n%s", taken, err, l.Logs(40))
	}
	t.Logf("node1 down: node2 took the Lease over, probed %s and refused it", taken)
	if err := l.StartAgent(ctx, "node1"); err != nil {
		t.Fatal(err)
	}
	stopWatch()
	if v := violation.Load(); v != nil {
		t.Fatalf("while another host had the address: %s\n%s", v, l.Logs(40))
	}

	// vip-ccm back: the address leaves status for the quarantine.
	if err := l.CCM.Start(); err != nil {
		t.Fatal(err)
	}
	if err := lab.Poll(ctx, 100*time.Millisecond, func() (bool, error) {
		svc, err := l.Admin.CoreV1().Services(sv.NS).Get(ctx, sv.Name, metav1.GetOptions{})
		return err == nil && len(lab.Ingress(svc)) == 0, nil
	}); err != nil {
		t.Fatalf("vip-ccm did not take %s out of status: %v\n%s", taken, err, l.Logs(40))
	}
	// The foreign host goes away; after the quarantine the address is
	// served.
	if _, err := l.Exec(ctx, r.NS, "ip", "addr", "del", cidr, "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	node, err := l.WaitServedBy(ctx, taken, lab.ServicePort, func(n string) bool { return l.Node(n) != nil })
	if err != nil {
		t.Fatalf("%s not served after the foreign host left and the quarantine ended: %v\n%s", taken, err, l.Logs(40))
	}
	var marks map[string]string
	if err := lab.Poll(ctx, 50*time.Millisecond, func() (bool, error) {
		le, err := l.Admin.CoordinationV1().Leases(lab.AgentNamespace).Get(ctx, lbsvc.AddressLeaseName(taken), metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		marks = le.Annotations
		return marks["vip.io/announced-by"] == node && marks["vip.io/announced-at"] != "", nil
	}); err != nil {
		t.Fatalf("address Lease annotations %v, want marked announced by %s: %v", marks, node, err)
	}
	t.Logf("foreign host gone, quarantine over: %s served by %s", taken, node)
}

// setIngress writes a Service's status addresses (what a load-balancer
// controller does).
func setIngress(ctx context.Context, t *testing.T, l *lab.Lab, sv l2Service, addrs ...string) {
	t.Helper()
	svc, err := l.Admin.CoreV1().Services(sv.NS).Get(ctx, sv.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc.Status.LoadBalancer.Ingress = nil
	for _, a := range addrs {
		svc.Status.LoadBalancer.Ingress = append(svc.Status.LoadBalancer.Ingress, v1.LoadBalancerIngress{IP: a})
	}
	if _, err := l.Admin.CoreV1().Services(sv.NS).UpdateStatus(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// waitConflict waits for the conflict record of addr renewed at or after
// since and returns it; it fails at once when the watcher saw a violation.
func waitConflict(ctx context.Context, t *testing.T, l *lab.Lab, addr netip.Addr, since time.Time, violation *atomic.Value) *coordv1.Lease {
	t.Helper()
	var rec *coordv1.Lease
	if err := lab.Poll(ctx, 50*time.Millisecond, func() (bool, error) {
		if v := violation.Load(); v != nil {
			return false, fmt.Errorf("while another host had the address: %s", v)
		}
		le, err := l.Admin.CoordinationV1().Leases(lab.AgentNamespace).Get(ctx, lbsvc.ConflictLeaseName(addr), metav1.GetOptions{})
		if err != nil || le.Spec.RenewTime == nil || le.Spec.RenewTime.Time.Before(since) {
			return false, nil
		}
		rec = le
		return true, nil
	}); err != nil {
		t.Fatalf("no conflict record for %s renewed since %s: %v\n%s", addr, since.UTC().Format(time.RFC3339Nano), err, l.Logs(40))
	}
	return rec
}
