//go:build e2e

package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestPortCut: a node that drops off the network keeps nothing: its routes
// go at hold-timer expiry and come back when the link does.
func TestPortCut(t *testing.T) {
	l := lab
	defer l.ensureAllUp(t)
	l.createService(t, "default", "cut")
	defer l.deleteService(t, "default", "cut")
	vip := l.waitAddress(t, "default", "cut")
	l.waitNextHops(t, vip, 20*time.Second, l.nodeIPs(false)...)

	t0 := time.Now()
	if err := ipc("-n", l.sw, "link", "set", l.node("node3").port, "down"); err != nil {
		t.Fatal(err)
	}
	l.waitNextHops(t, vip, 3*holdTime*time.Second, l.nodeIPs(false, "node1", "node2")...)
	gone := time.Since(t0)
	t.Logf("port cut -> node3's route gone after %v (hold time %ds)", gone.Round(time.Millisecond), holdTime)
	if gone < (holdTime-keepalive)*time.Second || gone > (holdTime+2)*time.Second {
		t.Errorf("route went after %v; want about the hold time (%ds)", gone, holdTime)
	}
	if body, err := l.get(vip, 2*time.Second); err != nil || body == "node3" {
		t.Errorf("GET through %s = %q, %v; want an answer from a node still connected", vip, body, err)
	}

	t0 = time.Now()
	if err := ipc("-n", l.sw, "link", "set", l.node("node3").port, "up"); err != nil {
		t.Fatal(err)
	}
	l.waitNextHops(t, vip, 30*time.Second, l.nodeIPs(false)...)
	t.Logf("port restored -> node3's route back after %v", time.Since(t0).Round(time.Millisecond))
}

// TestRouterRestart: when the router restarts, every agent sees its
// sessions drop (Warning Events on the Nodes) and advertises its routes again.
func TestRouterRestart(t *testing.T) {
	l := lab
	defer l.ensureAllUp(t)
	l.createService(t, "default", "restart")
	defer l.deleteService(t, "default", "restart")
	vip := l.waitAddress(t, "default", "restart")
	l.waitNextHops(t, vip, 20*time.Second, l.nodeIPs(false)...)

	since := time.Now()
	l.bird.stop(syscall.SIGTERM, 10*time.Second)
	if hops := l.nextHops(vip); len(hops) != 0 {
		t.Errorf("route via %v still installed after BIRD stopped", hops)
	}
	time.Sleep(time.Second)
	t0 := time.Now()
	if err := l.startBIRD(); err != nil {
		t.Fatal(err)
	}
	l.waitNextHops(t, vip, 30*time.Second, l.nodeIPs(false)...)
	back := time.Since(t0).Round(time.Millisecond)
	t.Logf("BIRD restarted -> routes from all three nodes back after %v", back)
	t.Cleanup(func() {
		resilienceRow(t, "BGP peer (BIRD) stopped 1 s and restarted, separate BGP lab",
			fmt.Sprintf("routes from all 3 nodes back %v after BIRD's start", back), "BGPSessionDown Warning on every Node")
	})

	// Each agent reported its sessions going down on its Node.
	l.eventually(t, "BGPSessionDown Warning Events on every Node", 15*time.Second, func() bool {
		evs, err := l.admin.CoreV1().Events("default").List(context.Background(), metav1.ListOptions{
			FieldSelector: "involvedObject.kind=Node,reason=BGPSessionDown"})
		if err != nil {
			return false
		}
		seen := map[string]bool{}
		for _, e := range evs.Items {
			if e.Type == "Warning" && e.LastTimestamp.Time.After(since.Add(-time.Second)) && strings.Contains(e.Message, l.routerIP4.String()) {
				seen[e.InvolvedObject.Name] = true
			}
		}
		return len(seen) == numNodes
	})
}

// TestKillRestartNoStale: an agent killed with SIGKILL loses its sessions
// (the kernel closes them, so routes go at once) but leaves its addresses
// on lo; its successor takes back those still wanted, removes the others,
// and advertises each address once.
func TestKillRestartNoStale(t *testing.T) {
	l := lab
	defer l.ensureAllUp(t)
	l.createService(t, "default", "keep")
	defer l.deleteService(t, "default", "keep")
	l.createService(t, "default", "drop")
	defer l.deleteService(t, "default", "drop")
	keep, drop := l.waitAddress(t, "default", "keep"), l.waitAddress(t, "default", "drop")
	l.waitNextHops(t, keep, 20*time.Second, l.nodeIPs(false)...)
	l.waitNextHops(t, drop, 20*time.Second, l.nodeIPs(false)...)

	t0 := time.Now()
	l.stopAgent("node2", syscall.SIGKILL)
	l.waitNextHops(t, keep, 5*time.Second, l.nodeIPs(false, "node1", "node3")...)
	t.Logf("SIGKILL -> node2's route gone after %v", time.Since(t0).Round(time.Millisecond))
	if got := l.lo("node2"); !slices.Contains(got, keep) || !slices.Contains(got, drop) {
		t.Fatalf("node2's lo after SIGKILL = %v; the test expects the addresses left behind", got)
	}

	l.deleteService(t, "default", "drop")
	l.waitNextHops(t, drop, 10*time.Second)
	l.restartAgent(t, "node2")
	l.waitNextHops(t, keep, 20*time.Second, l.nodeIPs(false)...)
	l.eventually(t, "node2's lo holding only the wanted address", 10*time.Second, func() bool {
		return slices.Equal(l.lo("node2"), []netip.Addr{keep})
	})
	l.eventually(t, "one advertised path on node2", 5*time.Second, func() bool {
		v, err := l.metric("node2", "vip_agent_bgp_paths_advertised", "")
		return err == nil && v == 1
	})
	if hops := l.nextHops(drop); len(hops) != 0 {
		t.Errorf("deleted Service's %s routed via %v", drop, hops)
	}
	out, _ := l.birdc("show", "route", "for", keep.String(), "all")
	if n := strings.Count(out, "BGP.origin"); n != numNodes {
		t.Errorf("BIRD has %d paths for %s; want %d (one per node):\n%s", n, keep, numNodes, out)
	}
}

// TestIPv6: an IPv6 Service is advertised as a /128 over the IPv6 sessions
// with each node's address as next hop, and the client reaches it.
func TestIPv6(t *testing.T) {
	l := lab
	l.createService(t, "default", "six", ipv6Only())
	defer l.deleteService(t, "default", "six")
	vip := l.waitAddress(t, "default", "six")
	if !l.pool6().Contains(vip) {
		t.Fatalf("address %s not from %s", vip, l.pool6())
	}
	d := l.waitNextHops(t, vip, 20*time.Second, l.nodeIPs(true)...)
	t.Logf("%s/128 via three IPv6 next hops after %v", vip, d)
	body, err := l.get(vip, 2*time.Second)
	if err != nil || !strings.HasPrefix(body, "node") {
		t.Fatalf("GET http://[%s]/ = %q, %v", vip, body, err)
	}
	for _, n := range l.nodes {
		if !slices.Contains(l.lo(n.name), vip) {
			t.Errorf("%s not on %s's lo", vip, n.name)
		}
	}
	l.deleteService(t, "default", "six")
	l.waitNextHops(t, vip, 10*time.Second)
}

// TestGracefulRestart: with graceful restart, a crashed agent's routes stay
// at the router (BIRD is a helper by default) until its successor is back,
// so clients see no gap; a SIGTERM still withdraws at once.
func TestGracefulRestart(t *testing.T) {
	l := lab
	n3 := l.node("node3")
	args := n3.agent.args
	defer func() {
		l.stopAgent("node3", syscall.SIGTERM)
		n3.agent.args = args
		l.ensureAllUp(t)
	}()
	l.stopAgent("node3", syscall.SIGTERM)
	n3.agent.args = append(append([]string(nil), args...), "--bgp-graceful-restart", "--bgp-restart-time", "30")
	l.restartAgent(t, "node3")

	l.createService(t, "default", "gr")
	defer l.deleteService(t, "default", "gr")
	vip := l.waitAddress(t, "default", "gr")
	l.waitNextHops(t, vip, 20*time.Second, l.nodeIPs(false)...)

	l.stopAgent("node3", syscall.SIGKILL)
	time.Sleep(2 * time.Second)
	if got := l.nextHops(vip); !slices.Equal(got, l.nodeIPs(false)) {
		t.Fatalf("after a crash with graceful restart the route is via %v; want all three (kept as stale)", got)
	}
	if err := n3.agent.start(); err != nil {
		t.Fatal(err)
	}
	if err := l.waitSessions(context.Background(), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if got := l.nextHops(vip); !slices.Equal(got, l.nodeIPs(false)) {
		t.Fatalf("after the restart the route is via %v; want all three", got)
	}

	t0 := time.Now()
	_ = n3.agent.cmd.Process.Signal(syscall.SIGTERM)
	l.waitNextHops(t, vip, 5*time.Second, l.nodeIPs(false, "node1", "node2")...)
	t.Logf("graceful restart on: SIGTERM still withdraws at once (%v)", time.Since(t0).Round(time.Millisecond))
}

// resilienceRow appends this test's line to the resilience report when
// `make resilience` asks for one (VIP_RESILIENCE_REPORT, table written by
// e2e.TestResilience before this package runs).
func resilienceRow(t *testing.T, scenario, outage, notes string) {
	path := os.Getenv("VIP_RESILIENCE_REPORT")
	if path == "" {
		return
	}
	result := "pass"
	if t.Failed() {
		result = "FAIL"
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Errorf("resilience report: %v", err)
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "| %s | %s | %s | – | %s |\n", scenario, result, outage, notes)
}
