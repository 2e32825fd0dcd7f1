//go:build e2e

package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/vip-lb/vip/e2e/internal/benchout"
)

// fibWatch follows the router's FIB through netlink and remembers, per
// host route of the pool, when it first appeared and when it first had
// every node as next hop.
type fibWatch struct {
	pool  netip.Prefix
	nodes int

	mu       sync.Mutex
	hops     map[netip.Addr][]netip.Addr
	first    map[netip.Addr]time.Time
	full     map[netip.Addr]time.Time
	lastDrop map[netip.Addr]time.Time // per next hop: last update that removed it from a route
	drops    map[netip.Addr][]time.Time
	errs     int
	done     chan struct{}
}

func (l *bgpLab) watchFIB(tb testing.TB) *fibWatch {
	tb.Helper()
	return l.watchFIBIn(tb, l.routerNS)
}

// watchFIBIn follows the FIB of the namespace ns (a router: BIRD's or FRR's).
func (l *bgpLab) watchFIBIn(tb testing.TB, ns netns.NsHandle) *fibWatch {
	tb.Helper()
	w := &fibWatch{pool: l.pool4(), nodes: len(l.nodes), hops: map[netip.Addr][]netip.Addr{}, first: map[netip.Addr]time.Time{},
		full: map[netip.Addr]time.Time{}, lastDrop: map[netip.Addr]time.Time{}, drops: map[netip.Addr][]time.Time{}, done: make(chan struct{})}
	ch := make(chan netlink.RouteUpdate, 65536)
	err := netlink.RouteSubscribeWithOptions(ch, w.done, netlink.RouteSubscribeOptions{
		Namespace: &ns, ReceiveBufferSize: 32 << 20, ReceiveBufferForceSize: true,
		ErrorCallback: func(error) { w.mu.Lock(); w.errs++; w.mu.Unlock() },
	})
	if err != nil {
		tb.Fatal(err)
	}
	go func() {
		for u := range ch {
			w.update(u, time.Now())
		}
	}()
	return w
}

func (w *fibWatch) stop() { close(w.done) }

func (w *fibWatch) update(u netlink.RouteUpdate, now time.Time) {
	if u.Dst == nil {
		return
	}
	ones, bits := u.Dst.Mask.Size()
	a, _ := netip.AddrFromSlice(u.Dst.IP)
	a = a.Unmap()
	if ones != bits || !w.pool.Contains(a) || u.Table != unix.RT_TABLE_MAIN {
		return
	}
	var hops []netip.Addr
	if u.Type == unix.RTM_NEWROUTE {
		if u.Gw != nil {
			g, _ := netip.AddrFromSlice(u.Gw)
			hops = append(hops, g.Unmap())
		}
		for _, nh := range u.MultiPath {
			g, _ := netip.AddrFromSlice(nh.Gw)
			hops = append(hops, g.Unmap())
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, h := range w.hops[a] {
		if !slices.Contains(hops, h) {
			w.lastDrop[h] = now
			w.drops[h] = append(w.drops[h], now)
		}
	}
	if len(hops) == 0 {
		delete(w.hops, a)
		return
	}
	w.hops[a] = hops
	if _, ok := w.first[a]; !ok {
		w.first[a] = now
	}
	if _, ok := w.full[a]; !ok && len(hops) == w.nodes {
		w.full[a] = now
	}
}

// count returns how many routes there are, how many go through every node,
// and how many go through hop.
func (w *fibWatch) count(hop netip.Addr) (routes, full, via int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, hs := range w.hops {
		routes++
		if len(hs) == w.nodes {
			full++
		}
		if slices.Contains(hs, hop) {
			via++
		}
	}
	return
}

// firstDropAfter is the first update after t that removed hop from a route.
func (w *fibWatch) firstDropAfter(hop netip.Addr, t time.Time) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, d := range w.drops[hop] {
		if d.After(t) {
			return d
		}
	}
	return time.Time{}
}

// loadavg is the machine's 1-minute load average, for context.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

// record writes a benchmark's figures to _out/bench.txt (see benchout).
func record(b *testing.B, name string, lines ...string) {
	if err := benchout.Write(name, lines...); err != nil {
		b.Logf("writing bench figures: %v", err)
	}
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s)-1)*p + 0.5)
	return s[i]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// waitFor polls cond every millisecond.
func waitFor(tb testing.TB, what string, timeout time.Duration, cond func() bool) {
	tb.Helper()
	t0 := time.Now()
	for !cond() {
		if time.Since(t0) > timeout {
			tb.Fatalf("timed out after %v waiting for %s\n%s", timeout, what, lab.logs(20))
		}
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkGracefulStop1: one Service; SIGTERM of one agent until the router
// has dropped that node's next hop (target: 100 ms).
func BenchmarkGracefulStop1(b *testing.B) {
	l := lab
	defer l.ensureAllUp(b)
	w := l.watchFIB(b)
	defer w.stop()
	l.createService(b, "default", "bench-stop")
	defer l.deleteService(b, "default", "bench-stop")
	vip := l.waitAddress(b, "default", "bench-stop")
	n2 := l.node("node2").ip4
	var all []time.Duration
	for i := 0; i < b.N; i++ {
		waitFor(b, "three next hops", 30*time.Second, func() bool { _, full, _ := w.count(n2); return full == 1 })
		t0 := time.Now()
		_ = l.node("node2").agent.cmd.Process.Signal(syscall.SIGTERM)
		waitFor(b, "node2 dropped", 5*time.Second, func() bool { _, _, via := w.count(n2); return via == 0 })
		w.mu.Lock()
		d := w.lastDrop[n2].Sub(t0)
		w.mu.Unlock()
		all = append(all, d)
		l.stopAgent("node2", syscall.SIGTERM)
		l.restartAgent(b, "node2")
	}
	b.Logf("%s: SIGTERM of node2 -> next hop gone from the router's FIB: %v", vip, all)
	b.ReportMetric(ms(percentile(all, 0.5)), "stop-to-withdrawn-p50-ms")
	b.ReportMetric(ms(percentile(all, 1)), "stop-to-withdrawn-max-ms")
	record(b, "BenchmarkGracefulStop1 (BGP)", fmt.Sprintf("SIGTERM of one agent -> its next hop gone from the router's FIB, %d runs: median %.1f ms, max %.1f ms (target <= 100 ms); load average %s",
		len(all), ms(percentile(all, 0.5)), ms(percentile(all, 1)), loadavg()))
	b.ReportMetric(0, "ns/op")
}

// BenchmarkBGP1000Services: 1000 Services on three nodes with two sessions
// each. Reports the time from an address appearing in a Service's status
// (as a watcher sees it) to its /32 in the router's FIB (first next hop and
// all three; target p99 200 ms), the agents' largest RSS (target 96 MB),
// the time from SIGTERM of one agent to its 1000 next hops leaving the FIB
// (target 100 ms), and the time to re-advertise after its restart.
func BenchmarkBGP1000Services(b *testing.B) {
	const n = 1000
	l := lab
	defer l.ensureAllUp(b)
	ctx := context.Background()
	w := l.watchFIB(b)
	defer w.stop()

	statusAt := map[netip.Addr]time.Time{}
	var smu sync.Mutex
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	watcher, err := l.admin.CoreV1().Services(scaleNS).Watch(wctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		for ev := range watcher.ResultChan() {
			if ev.Type != watch.Added && ev.Type != watch.Modified {
				continue
			}
			now := time.Now()
			if s, ok := ev.Object.(*v1.Service); ok {
				smu.Lock()
				for _, a := range ingress(s) {
					if _, seen := statusAt[a]; !seen {
						statusAt[a] = now
					}
				}
				smu.Unlock()
			}
		}
	}()

	b.ResetTimer()
	t0 := time.Now()
	l.createScale(b, n)
	created := time.Since(t0)
	waitFor(b, fmt.Sprintf("%d routes with three next hops", n), 10*time.Minute, func() bool {
		_, full, _ := w.count(netip.Addr{})
		return full == n
	})
	all := time.Since(t0)
	b.StopTimer()

	var first, full []time.Duration
	smu.Lock()
	w.mu.Lock()
	for a, st := range statusAt {
		if f, ok := w.first[a]; ok {
			first = append(first, max(0, f.Sub(st)))
		}
		if f, ok := w.full[a]; ok {
			full = append(full, max(0, f.Sub(st)))
		}
	}
	errs := w.errs
	w.mu.Unlock()
	smu.Unlock()
	if len(first) != n {
		b.Errorf("matched %d of %d addresses between status and FIB", len(first), n)
	}
	if errs > 0 {
		b.Errorf("%d netlink monitor errors (lost updates)", errs)
	}
	b.ReportMetric(ms(percentile(first, 0.5)), "status-to-fib-p50-ms")
	b.ReportMetric(ms(percentile(first, 0.99)), "status-to-fib-p99-ms")
	b.ReportMetric(ms(percentile(full, 0.99)), "status-to-ecmp3-p99-ms")
	b.ReportMetric(ms(percentile(first, 1)), "status-to-fib-max-ms")
	b.ReportMetric(all.Seconds(), "create-1000-to-all-routes-s")
	b.Logf("created %d Services in %v; all /32s with three next hops after %v", n, created, all)

	var worst int64
	for _, nd := range l.nodes {
		v, err := l.metric(nd.name, "vip_agent_bgp_paths_advertised", "")
		if err != nil || v != n {
			b.Errorf("%s advertises %v paths (%v); want %d", nd.name, v, err, n)
		}
		r, err := rss(nd.agent.pid())
		if err != nil {
			b.Fatal(err)
		}
		worst = max(worst, r)
	}
	b.ReportMetric(float64(worst)/(1<<20), "agent-rss-max-MB")

	// Graceful stop with 1000 routes through the stopping node.
	n1 := l.node("node1").ip4
	ts := time.Now()
	_ = l.node("node1").agent.cmd.Process.Signal(syscall.SIGTERM)
	waitFor(b, "node1 gone from every route", 30*time.Second, func() bool { _, _, via := w.count(n1); return via == 0 })
	w.mu.Lock()
	stop := w.lastDrop[n1].Sub(ts)
	w.mu.Unlock()
	firstGone := w.firstDropAfter(n1, ts).Sub(ts)
	l.stopAgent("node1", syscall.SIGTERM)
	b.ReportMetric(ms(stop), "stop-1000-to-withdrawn-ms")
	b.ReportMetric(ms(firstGone), "stop-1000-to-first-withdrawn-ms")

	tr := time.Now()
	if err := l.node("node1").agent.start(); err != nil {
		b.Fatal(err)
	}
	waitFor(b, "node1 back in every route", 2*time.Minute, func() bool { _, full, _ := w.count(n1); return full == n })
	rt := time.Since(tr)
	b.ReportMetric(rt.Seconds(), "restart-to-1000-readvertised-s")

	td := time.Now()
	l.deleteScale(b, n)
	waitFor(b, "every route gone", 5*time.Minute, func() bool { routes, _, _ := w.count(n1); return routes == 0 })
	del := time.Since(td)
	b.ReportMetric(del.Seconds(), "delete-1000-to-no-routes-s")
	record(b, "BenchmarkBGP1000Services (BGP, 3 nodes x 2 sessions, BIRD 2)",
		fmt.Sprintf("address in status -> /32 in router FIB: p50 %.1f ms, p99 %.1f ms, max %.1f ms (target p99 <= 200 ms)",
			ms(percentile(first, 0.5)), ms(percentile(first, 0.99)), ms(percentile(first, 1))),
		fmt.Sprintf("address in status -> all 3 ECMP next hops: p99 %.1f ms", ms(percentile(full, 0.99))),
		fmt.Sprintf("agent RSS with %d Services and 2 peers: max %.1f MB (target <= 96 MB)", n, float64(worst)/(1<<20)),
		fmt.Sprintf("SIGTERM -> %d next hops gone from the router's FIB: first after %.1f ms, last after %.1f ms (target <= 100 ms)", n, ms(firstGone), ms(stop)),
		fmt.Sprintf("agent restart -> %d routes re-advertised: %.2f s; %d Services created -> all routed: %.1f s; deleted -> no routes: %.1f s",
			n, rt.Seconds(), n, all.Seconds(), del.Seconds()),
		"load average "+loadavg())
	b.ReportMetric(0, "ns/op")
}

// createScale creates Services s0000 … in the scale namespace, 8 at a time.
func (l *bgpLab) createScale(tb testing.TB, n int) {
	tb.Helper()
	l.eachScale(n, func(name string) {
		if _, err := l.admin.CoreV1().Services(scaleNS).Create(context.Background(), newService(scaleNS, name, withoutEndpoints()), metav1.CreateOptions{}); err != nil {
			tb.Error(err)
		}
	})
}

// deleteScale deletes what createScale created.
func (l *bgpLab) deleteScale(tb testing.TB, n int) {
	tb.Helper()
	l.eachScale(n, func(name string) { l.deleteService(tb, scaleNS, name) })
}

func (l *bgpLab) eachScale(n int, f func(name string)) {
	var wg sync.WaitGroup
	jobs := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range jobs {
				f(fmt.Sprintf("s%04d", i))
			}
		})
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
}
