//go:build cluster

package cluster

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// bgpMode switches the running install to deploy/overlays/bgp (kubectl
// apply -k, the peer being the lab's BIRD router), serves a Deployment in
// BGPNamespace behind a LoadBalancer Service from the BGP pool (off the
// client's link), and checks that the router learns the /32 from every
// node, the client reaches the pods through the router and kube-proxy, and
// the route is withdrawn when the Service is deleted.
func bgpMode(t *testing.T, c *Cluster) {
	ctx := context.Background()
	t0 := time.Now()
	if err := c.StartRouter(ctx); err != nil {
		t.Fatal(err)
	}
	// docs/bgp.md: nodes in BGP mode answer ARP only for addresses of the
	// interface asked on (the addresses sit on lo).
	for _, n := range c.Nodes() {
		if _, err := runIn(n, "sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1"); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, n := range c.Nodes() {
			_, _ = runIn(n, "sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=0")
		}
	})
	if err := c.InstallVIPBGP(ctx); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var up []string
	err := Poll(wctx, 200*time.Millisecond, func() (bool, error) {
		var err error
		up, err = c.Established()
		return len(up) == len(c.Nodes()), err
	})
	if err != nil {
		out, _ := c.Birdc("show", "protocols", "all")
		t.Fatalf("BGP sessions established: %v, want every node: %v\n%s", up, err, out)
	}
	t.Logf("FIGURE BGP overlay applied, agents rolled and %d sessions Established: %v", len(up), since(t0))

	if err := c.DeployEcho(ctx, BGPNamespace, "echo", 2); err != nil {
		t.Fatal(err)
	}
	addr, err := c.ExposeLB(ctx, BGPNamespace, "echo", "echo", false)
	if err != nil {
		t.Fatal(err)
	}
	if !netip.MustParsePrefix(BGPSubnet).Contains(addr) {
		t.Fatalf("Service %s/echo got %s, want one from range-%s %s", BGPNamespace, addr, BGPNamespace, BGPPoolRange)
	}
	if out, err := runIn(ClientNS, "ip", "route", "get", addr.String()); err != nil || !strings.Contains(out, "via "+RouterIP) {
		t.Fatalf("the client does not reach %s through the router: %v %s", addr, err, out)
	}
	var want []string
	for i := range c.Nodes() {
		want = append(want, NodeIP(i+1))
	}
	var hops []string
	err = Poll(wctx, 100*time.Millisecond, func() (bool, error) {
		var err error
		hops, err = RouterNextHops(addr)
		slices.Sort(hops)
		return slices.Equal(hops, want), err
	})
	if err != nil {
		out, _ := c.Birdc("show", "route", "all")
		t.Fatalf("router's route to %s/32: next hops %v, want every node %v: %v\n%s", addr, hops, want, err, out)
	}
	t.Logf("router: %s/32 via %v", addr, hops)
	pods := map[string]bool{}
	var last error
	err = Poll(wctx, 50*time.Millisecond, func() (bool, error) {
		body, err := Get(wctx, addr, 80, 2*time.Second)
		if err != nil {
			last = err
			return false, nil
		}
		a, err := ParseAnswer(body)
		if err != nil {
			return false, err
		}
		pods[a.Pod] = true
		return len(pods) >= 2, nil
	})
	if err != nil {
		t.Fatalf("BGP Service %s through the router: answers from %d pods (want 2): %v (last error %v)", addr, len(pods), err, last)
	}
	t.Logf("BGP Service %s answered through the router by pods %v", addr, keys(pods))

	t1 := time.Now()
	if err := c.Admin.CoreV1().Services(BGPNamespace).Delete(ctx, "echo", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err = Poll(wctx, 50*time.Millisecond, func() (bool, error) {
		var err error
		hops, err = RouterNextHops(addr)
		return len(hops) == 0, err
	})
	if err != nil {
		t.Fatalf("route to %s still on the router after the Service was deleted (via %v): %v", addr, hops, err)
	}
	// birdc exits 1 with "Network not found" when no route covers addr.
	if out, err := c.Birdc("show", "route", "for", addr.String()); strings.Contains(out, addr.String()+"/32") ||
		(err != nil && !strings.Contains(out, "Network not found")) {
		t.Errorf("BIRD still has %s/32 after the Service was deleted: %v\n%s", addr, err, out)
	}
	t.Logf("FIGURE BGP withdrawal: Service deleted -> route gone from the router in %v", since(t1))
	if err := c.Admin.CoreV1().Namespaces().Delete(ctx, BGPNamespace, metav1.DeleteOptions{}); err != nil {
		t.Error(err)
	}
}
