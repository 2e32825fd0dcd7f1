//go:build e2e

package bgp

import (
	"fmt"
	"syscall"
	"testing"
	"time"
)

// BenchmarkGracefulStopFRR: the graceful stop of BenchmarkBGP1000Services
// measured in a second router's FIB. FRR (bgpd + zebra, which hands routes
// to the kernel in netlink batches) peers with every node through the node
// annotations; 1000 Services are routed over the three nodes; one agent gets
// SIGTERM, and the time until its next hop is gone from all 1000 routes in
// FRR's FIB is reported next to BIRD's, measured in the same stop. What the
// agent does is the same for both routers (its sessions end with a
// NOTIFICATION within a few milliseconds); the difference is how fast each
// router reprograms its FIB.
func BenchmarkGracefulStopFRR(b *testing.B) {
	const n = 1000
	l := lab
	defer l.ensureAllUp(b)
	f := l.startFRR(b)
	defer f.stop()
	peers := fmt.Sprintf("%s:%d,[%s]:%d,%s:%d", l.routerIP4, routerAS, l.routerIP6, routerAS, f.ip, routerAS)
	clear := map[string]*string{annPrefix + "/node-asn": nil, annPrefix + "/src-ip": nil, annPrefix + "/bgp-peers": nil}
	for _, nd := range l.nodes {
		l.annotate(b, nd.name, map[string]*string{
			annPrefix + "/node-asn": ptr(fmt.Sprint(nodeAS)), annPrefix + "/src-ip": ptr(nd.ip4.String()), annPrefix + "/bgp-peers": ptr(peers),
		})
		defer l.annotate(b, nd.name, clear)
	}
	l.eventually(b, "FRR sessions with every node", 60*time.Second, func() bool {
		up := f.established()
		for _, nd := range l.nodes {
			if !up[nd.ip4.String()] {
				return false
			}
		}
		return true
	})
	frrFIB := l.watchFIBIn(b, f.nsh)
	defer frrFIB.stop()
	birdFIB := l.watchFIB(b)
	defer birdFIB.stop()
	routers := []struct {
		name string
		fib  *fibWatch
	}{{"FRR", frrFIB}, {"BIRD", birdFIB}}

	l.createScale(b, n)
	defer func() {
		l.deleteScale(b, n)
		waitFor(b, "every route gone from FRR's FIB", 5*time.Minute, func() bool { routes, _, _ := frrFIB.count(l.node("node1").ip4); return routes == 0 })
	}()
	for _, w := range routers {
		waitFor(b, fmt.Sprintf("%d routes with three next hops in %s's FIB", n, w.name), 10*time.Minute, func() bool {
			_, full, _ := w.fib.count(l.node("node1").ip4)
			return full == n
		})
	}

	b.ResetTimer()
	n1 := l.node("node1").ip4
	ts := time.Now()
	_ = l.node("node1").agent.cmd.Process.Signal(syscall.SIGTERM)
	gone := map[string]time.Duration{}
	first := map[string]time.Duration{}
	for _, w := range routers {
		waitFor(b, "node1 gone from every route in "+w.name+"'s FIB", 30*time.Second, func() bool { _, _, via := w.fib.count(n1); return via == 0 })
		w.fib.mu.Lock()
		gone[w.name] = w.fib.lastDrop[n1].Sub(ts)
		w.fib.mu.Unlock()
		first[w.name] = w.fib.firstDropAfter(n1, ts).Sub(ts)
	}
	b.StopTimer()
	l.stopAgent("node1", syscall.SIGTERM)
	l.restartAgent(b, "node1")

	b.ReportMetric(ms(gone["FRR"]), "frr-stop-1000-to-withdrawn-ms")
	b.ReportMetric(ms(first["FRR"]), "frr-stop-1000-to-first-withdrawn-ms")
	b.ReportMetric(ms(gone["BIRD"]), "bird-stop-1000-to-withdrawn-ms")
	b.ReportMetric(0, "ns/op")
	record(b, "BenchmarkGracefulStopFRR (BGP, 3 nodes, FRR and BIRD 2 peering with each)",
		fmt.Sprintf("SIGTERM -> %d next hops gone from FRR's FIB: first after %.1f ms, last after %.1f ms (target <= 100 ms)", n, ms(first["FRR"]), ms(gone["FRR"])),
		fmt.Sprintf("same stop, BIRD's FIB: first after %.1f ms, last after %.1f ms", ms(first["BIRD"]), ms(gone["BIRD"])),
		"load average "+loadavg())
}
