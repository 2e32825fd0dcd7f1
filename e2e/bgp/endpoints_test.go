//go:build e2e

package bgp

import (
	"testing"
	"time"
)

// TestNoReadyEndpoints: a Service whose endpoints all turn not ready is
// withdrawn by every node (kube-vip and MetalLB do the same) and comes back
// when one is ready again; kube-vip's allow-reconcile-without-endpoints
// annotation keeps a Service without ready endpoints advertised.
func TestNoReadyEndpoints(t *testing.T) {
	l := lab
	l.createService(t, "default", "noep")
	defer l.deleteService(t, "default", "noep")
	vip := l.waitAddress(t, "default", "noep")
	l.waitNextHops(t, vip, 30*time.Second, l.nodeIPs(false)...)
	l.setEndpointsReady(t, "default", "noep", false, "node1", "node2", "node3")
	d := l.waitNextHops(t, vip, 30*time.Second)
	t.Logf("endpoints not ready: route withdrawn by every node after %v", d)
	l.setEndpointsReady(t, "default", "noep", true, "node2")
	d = l.waitNextHops(t, vip, 30*time.Second, l.nodeIPs(false)...)
	t.Logf("one endpoint ready again: every node advertises after %v", d)

	l.setEndpointsReady(t, "default", "optout", false, "node1")
	l.createService(t, "default", "optout", withoutEndpoints())
	defer l.deleteService(t, "default", "optout")
	vip2 := l.waitAddress(t, "default", "optout")
	l.waitNextHops(t, vip2, 30*time.Second, l.nodeIPs(false)...)
	t.Logf("%s: advertised without a ready endpoint (allow-reconcile-without-endpoints)", vip2)
}
