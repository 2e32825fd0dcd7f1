//go:build e2e

package bgp

import (
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"

	"github.com/vip-lb/vip/pkg/lbsvc"
)

// requestAddr asks for addr on port (Services sharing an address need
// different ports).
func requestAddr(addr string, port int32) svcOpt {
	return func(s *v1.Service) {
		s.Annotations = map[string]string{lbsvc.AnnotationLoadBalancerIPs: addr}
		s.Spec.Ports[0].Port = port
	}
}

// TestSharedAddress: Services sharing an address are advertised by the same
// set of nodes: with externalTrafficPolicy Local, the nodes that have a
// ready endpoint of every one of them. Deleting one leaves the others
// advertised (from the nodes now common to the rest).
func TestSharedAddress(t *testing.T) {
	l := lab
	ns := sharedNS
	l.setEndpoints(t, ns, "sh-a", "node1", "node2", "node3")
	l.setEndpoints(t, ns, "sh-b", "node1", "node2")
	l.setEndpoints(t, ns, "sh-c", "node2", "node3")
	l.createService(t, ns, "sh-a")
	defer l.deleteService(t, ns, "sh-a")
	vip := l.waitAddress(t, ns, "sh-a")
	l.createService(t, ns, "sh-b", local(), requestAddr(vip.String(), 81))
	defer l.deleteService(t, ns, "sh-b")
	l.createService(t, ns, "sh-c", local(), requestAddr(vip.String(), 82))
	defer l.deleteService(t, ns, "sh-c")
	for _, n := range []string{"sh-b", "sh-c"} {
		if got := l.waitAddress(t, ns, n); got != vip {
			t.Fatalf("%s got %s, want the shared %s", n, got, vip)
		}
	}
	// b is Local on node1,node2 and c on node2,node3: only node2 serves all three.
	d := l.waitNextHops(t, vip, 30*time.Second, l.node("node2").ip4)
	t.Logf("3 Services on %s: advertised by node2 alone (the intersection) after %v", vip, d)

	l.deleteService(t, ns, "sh-b")
	d = l.waitNextHops(t, vip, 30*time.Second, l.nodeIPs(false, "node2", "node3")...)
	t.Logf("sh-b deleted: next hops node2,node3 (a and c) after %v", d)
	if body, err := l.get(vip, 2*time.Second); err != nil || (body != "node2" && body != "node3") {
		t.Errorf("GET through %s = %q, %v; want node2 or node3", vip, body, err)
	}
	l.deleteService(t, ns, "sh-c")
	d = l.waitNextHops(t, vip, 30*time.Second, l.nodeIPs(false)...)
	t.Logf("sh-c deleted: every node advertises sh-a (Cluster) after %v", d)
}
