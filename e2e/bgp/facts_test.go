//go:build e2e

package bgp

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vip-lb/vip/pkg/lbsvc"
)

// TestNodeFactsRefused: BGP-mode agents publish their node's interface
// addresses and default gateways on their Lease vip-node-<node>, and
// vip-ccm never hands them out. The lab's pools ConfigMap has no
// allow-static-outside-pools key (kube-vip's behaviour: any requested
// address outside the other namespaces' pools is accepted), so these facts
// are the only thing between a tenant and the router. Every node gets a
// default route via the lab router (which has no route out of the lab) and
// node2 a second address on eth0 that is not in its Node object. A Service
// requesting the router's address and one requesting node2's second
// address get a Warning AddressForbidden, no status, and no route at BIRD;
// a legitimate Service keeps its route through all of it.
func TestNodeFactsRefused(t *testing.T) {
	l := lab
	ctx := context.Background()
	gw := l.routerIP4
	extra := l.ip4(0, 42) // node2's second address
	for _, n := range l.nodes {
		if err := ipc("-n", n.ns, "route", "add", "default", "via", gw.String()); err != nil {
			t.Fatal(err)
		}
	}
	if err := ipc("-n", l.node("node2").ns, "addr", "add", extra.String()+"/24", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, n := range l.nodes {
			if err := ipc("-n", n.ns, "route", "del", "default", "via", gw.String()); err != nil {
				t.Error(err)
			}
		}
		if err := ipc("-n", l.node("node2").ns, "addr", "del", extra.String()+"/24", "dev", "eth0"); err != nil {
			t.Error(err)
		}
	}()

	l.createService(t, "default", "facts-legit")
	defer l.deleteService(t, "default", "facts-legit")
	legit := l.waitAddress(t, "default", "facts-legit")
	l.waitNextHops(t, legit, 30*time.Second, l.nodeIPs(false)...)

	// The agents read their addresses every 10 s and write on change.
	facts := func(node string) map[string]string {
		le, err := l.admin.CoordinationV1().Leases("kube-system").Get(ctx, "vip-node-"+node, metav1.GetOptions{})
		if err != nil {
			return nil
		}
		return le.Annotations
	}
	d := l.eventually(t, "every node Lease listing the gateway, node2's listing its second address", time.Minute, func() bool {
		for _, n := range l.nodes {
			a := facts(n.name)
			if !slices.Contains(strings.Split(a[lbsvc.AnnotationNodeGateways], ","), gw.String()) || a[lbsvc.AnnotationNodeReady] != "true" {
				return false
			}
		}
		return slices.Contains(strings.Split(facts("node2")[lbsvc.AnnotationNodeAddresses], ","), extra.String())
	})
	t.Logf("facts published %v after the route and address were added: node2 %v", d, facts("node2"))

	for _, tc := range []struct{ name, why string }{
		{"facts-router", gw.String()},
		{"facts-node", extra.String()},
	} {
		l.createService(t, "default", tc.name, func(s *v1.Service) {
			s.Annotations = map[string]string{lbsvc.AnnotationLoadBalancerIPs: tc.why}
		})
		defer l.deleteService(t, "default", tc.name)
	}
	for _, tc := range []struct {
		name string
		addr netip.Addr
	}{{"facts-router", gw}, {"facts-node", extra}} {
		var msg string
		l.eventually(t, "a Warning AddressForbidden on "+tc.name, 30*time.Second, func() bool {
			evs, err := l.admin.CoreV1().Events("default").List(ctx, metav1.ListOptions{
				FieldSelector: "involvedObject.name=" + tc.name + ",reason=AddressForbidden"})
			if err != nil || len(evs.Items) == 0 {
				return false
			}
			msg = evs.Items[0].Message
			return evs.Items[0].Type == v1.EventTypeWarning
		})
		if !strings.Contains(msg, "interface address or default gateway of a node") {
			t.Errorf("%s: Warning %q does not say the address is a node's", tc.name, msg)
		}
		s, err := l.admin.CoreV1().Services("default").Get(ctx, tc.name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if a := ingress(s); len(a) > 0 {
			t.Errorf("%s: status carries %v", tc.name, a)
		}
		// birdc exits 1 for a prefix it has no route for.
		out, err := l.birdc("show", "route", netip.PrefixFrom(tc.addr, 32).String())
		if err != nil {
			out += err.Error()
		}
		if hops := l.nextHops(tc.addr); len(hops) > 0 || !strings.Contains(out, "Network not found") {
			t.Errorf("%s: BIRD has a route for %s (next hops %v):\n%s", tc.name, tc.addr, hops, out)
		}
		for _, n := range l.nodes {
			if slices.Contains(l.lo(n.name), tc.addr) {
				t.Errorf("%s: %s bound on %s's lo", tc.name, tc.addr, n.name)
			}
		}
		t.Logf("%s (%s) refused: %s", tc.name, tc.addr, msg)
	}
	if hops := l.nextHops(legit); !slices.Equal(hops, l.nodeIPs(false)) {
		t.Errorf("legitimate Service %s: next hops %v, want %v", legit, hops, l.nodeIPs(false))
	}
	if body, err := l.get(legit, 2*time.Second); err != nil {
		t.Errorf("GET through %s: %q, %v", legit, body, err)
	}
}
