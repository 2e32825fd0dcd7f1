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

// lab is shared by every test and benchmark of this package; each one
// leaves it as it found it (all agents running, every session up).
var lab *bgpLab

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Println("e2e/bgp: skipped (needs root for network namespaces)")
		os.Exit(0)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	var err error
	lab, err = newLab(ctx, func(f string, a ...any) { fmt.Printf(f+"\n", a...) })
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e/bgp: lab:", err)
		os.Exit(1)
	}
	code := m.Run()
	if code != 0 {
		fmt.Printf("lab logs (folder %s):\n%s\n", lab.dir, lab.logs(60))
	}
	lab.close()
	os.Exit(code)
}

// TestECMP: the router learns the /32 from every node (with the agents'
// communities), installs the three next hops, the client behind the router
// gets answers from the nodes through the address, and deleting the
// Service removes the route and the addresses.
func TestECMP(t *testing.T) {
	l := lab
	l.createService(t, "default", "ecmp")
	vip := l.waitAddress(t, "default", "ecmp")
	if !l.pool4().Contains(vip) {
		t.Fatalf("address %s not from the pool %s", vip, l.pool4())
	}
	d := l.waitNextHops(t, vip, 20*time.Second, l.nodeIPs(false)...)
	t.Logf("%s: three next hops at the router %v after the address appeared", vip, d)
	for _, n := range l.nodes {
		if !slices.Contains(l.lo(n.name), vip) {
			t.Errorf("%s is not bound on %s's lo: %v", vip, n.name, l.lo(n.name))
		}
	}
	out, err := l.birdc("show", "route", "for", vip.String(), "all")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"(64513,100)", "(64513, 7, 9)", "BGP.as_path: 64513"} {
		if !strings.Contains(out, want) {
			t.Errorf("BIRD's route lacks %q:\n%s", want, out)
		}
	}
	seen := map[string]int{}
	for i := 0; i < 60 && len(seen) < 3; i++ {
		body, err := l.get(vip, 2*time.Second)
		if err != nil {
			t.Fatalf("GET http://%s/ from the client: %v", vip, err)
		}
		seen[body]++
	}
	if len(seen) < 2 {
		t.Errorf("all answers from %v; want several nodes behind the ECMP route", seen)
	}
	t.Logf("answers through %s: %v", vip, seen)
	if v, err := l.metric("node1", "vip_agent_bgp_paths_advertised", ""); err != nil || v < 1 {
		t.Errorf("vip_agent_bgp_paths_advertised on node1 = %v, %v", v, err)
	}
	if v, err := l.metric("node1", "vip_agent_bgp_session_up", fmt.Sprintf("peer=%q", l.routerIP4)); err != nil || v != 1 {
		t.Errorf("vip_agent_bgp_session_up{peer=%s} on node1 = %v, %v", l.routerIP4, v, err)
	}

	l.deleteService(t, "default", "ecmp")
	d = l.waitNextHops(t, vip, 10*time.Second)
	t.Logf("Service deleted: route gone after %v", d)
	l.eventually(t, "the address off every lo", 5*time.Second, func() bool {
		for _, n := range l.nodes {
			if slices.Contains(l.lo(n.name), vip) {
				return false
			}
		}
		return true
	})
	if _, err := l.get(vip, 500*time.Millisecond); err == nil {
		t.Errorf("%s still answers after the Service was deleted", vip)
	}
}

// TestLocalTrafficPolicy: with externalTrafficPolicy Local only nodes with a
// ready endpoint advertise, and the next hops follow the endpoints.
func TestLocalTrafficPolicy(t *testing.T) {
	l := lab
	l.createService(t, "default", "local", local())
	defer l.deleteService(t, "default", "local")
	vip := l.waitAddress(t, "default", "local")
	time.Sleep(time.Second)
	if hops := l.nextHops(vip); len(hops) != 0 {
		t.Fatalf("route via %v without any endpoint", hops)
	}
	l.setEndpoints(t, "default", "local", "node2")
	l.waitNextHops(t, vip, 10*time.Second, l.node("node2").ip4)
	if body, err := l.get(vip, 2*time.Second); err != nil || body != "node2" {
		t.Errorf("GET through %s = %q, %v; want node2", vip, body, err)
	}
	for _, n := range []string{"node1", "node3"} {
		if slices.Contains(l.lo(n), vip) {
			t.Errorf("%s bound on %s, which has no endpoint", vip, n)
		}
	}
	l.setEndpoints(t, "default", "local", "node1", "node3")
	d := l.waitNextHops(t, vip, 10*time.Second, l.nodeIPs(false, "node1", "node3")...)
	t.Logf("endpoints moved: next hops followed in %v", d)
}

// TestSIGTERM: a stopping agent's routes leave the router at once, its
// addresses leave lo, and after a restart its paths come back once.
func TestSIGTERM(t *testing.T) {
	l := lab
	defer l.ensureAllUp(t)
	l.createService(t, "default", "term")
	defer l.deleteService(t, "default", "term")
	vip := l.waitAddress(t, "default", "term")
	l.waitNextHops(t, vip, 20*time.Second, l.nodeIPs(false)...)

	t0 := time.Now()
	if err := l.node("node1").agent.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	l.waitNextHops(t, vip, 5*time.Second, l.nodeIPs(false, "node2", "node3")...)
	gone := time.Since(t0)
	t.Logf("SIGTERM -> node1's route withdrawn at the router in %v", gone)
	if gone > 2*time.Second {
		t.Errorf("withdrawal took %v", gone)
	}
	l.stopAgent("node1", syscall.SIGTERM)
	if got := l.lo("node1"); len(got) != 0 {
		t.Errorf("addresses left on node1's lo after a graceful stop: %v", got)
	}
	evs, err := l.admin.CoreV1().Events("default").List(context.Background(), metav1.ListOptions{
		FieldSelector: "involvedObject.kind=Node,involvedObject.name=node1,reason=BGPStopped"})
	if err != nil || len(evs.Items) == 0 {
		t.Errorf("no BGPStopped Event on node1 (%v)", err)
	}
	if log := tail(l.node("node1").agent.log, 30); strings.Contains(log, "broadcaster already stopped") {
		t.Errorf("events lost at shutdown:\n%s", log)
	}

	l.restartAgent(t, "node1")
	l.waitNextHops(t, vip, 20*time.Second, l.nodeIPs(false)...)
	if got := l.lo("node1"); !slices.Equal(got, []netip.Addr{vip}) {
		t.Errorf("node1's lo after restart = %v; want just %s", got, vip)
	}
	l.eventually(t, "one advertised path on node1", 5*time.Second, func() bool {
		v, err := l.metric("node1", "vip_agent_bgp_paths_advertised", "")
		return err == nil && v == 1
	})
}
