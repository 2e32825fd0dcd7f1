package election

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	rtmetrics "runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vip-lb/vip/pkg/liveness"
	"github.com/vip-lb/vip/pkg/testbed"
)

// TestLinkScale is the many-electors-in-one-process variant of the layer 2
// liveness benchmark (e2e BenchmarkL2Liveness runs one agent process per
// network namespace, which does not settle at 100 nodes on a 2-core
// machine). Skipped unless VIP_BENCH_LINK_NODES is set, e.g. "3,20,50,100";
// modes from VIP_BENCH_LINK_MODES (default "link"; "lease" too for the
// comparison). For each count and mode: that many Electors in this process,
// each with its own API client and, in link mode, its own liveness monitor
// (own identity, own UDP socket on 127.0.0.1), against the real
// kube-apiserver and etcd, holding 10 Services; at rest for
// VIP_BENCH_LINK_REST (default 60s, in link mode at least one membership
// period + 10s, so that every node renews once): API writes/s from kube-apiserver's
// apiserver_request_total, CPU of kube-apiserver, etcd and this process
// (all Electors; per Elector = total / N); then VIP_BENCH_LINK_RUNS
// (default 5, at most N-2: three nodes stay) times the holder of svc-0
// crashes (Elector and monitor stop, no hand-off) and the time until every
// one of its Services is announced by another node is measured, with a
// trace of where that time went (scaleTrace). VIP_BENCH_LINK_REST=0 skips
// the at-rest window (failover only); VIP_BENCH_LINK_CPUPROFILE=file writes
// a CPU profile of everything after the start-up.
func TestLinkScale(t *testing.T) {
	spec := os.Getenv("VIP_BENCH_LINK_NODES")
	if spec == "" {
		t.Skip("set VIP_BENCH_LINK_NODES (e.g. 3,20,50,100) to run the in-process liveness scale benchmark")
	}
	rest := 60 * time.Second
	if v := os.Getenv("VIP_BENCH_LINK_REST"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatal(err)
		}
		rest = d
		if d == 0 {
			rest = -1 // failover only, no at-rest window
		}
	}
	runs := 5
	if v := os.Getenv("VIP_BENCH_LINK_RUNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatal(err)
		}
		runs = n
	}
	modes := "link"
	if v := os.Getenv("VIP_BENCH_LINK_MODES"); v != "" {
		modes = v
	}
	env := testbed.Start(t)
	for _, ns := range strings.Split(spec, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(ns))
		if err != nil {
			t.Fatal(err)
		}
		for _, mode := range strings.Split(modes, ",") {
			t.Run(fmt.Sprintf("%s-%d", mode, n), func(t *testing.T) { linkScale(t, env, mode, n, rest, runs) })
		}
	}
}

// scaleOpts is the cluster's Options hook for the scale benchmark: quiet
// logs, and in link mode a monitor on its own loopback socket.
func scaleOpts(t *testing.T, mode string, mons *atomic.Int64, links *sync.Map, tr *scaleTrace) func(*Options) {
	return func(o *Options) {
		o.Logger = tr.logger(o.NodeName)
		o.SettleTime = 5 * time.Second
		if mode != "link" {
			return
		}
		udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		el := &atomic.Pointer[Elector]{}
		fresh, changed := LinkHooks(el)
		m, err := liveness.New(liveness.Options{Self: o.NodeName, Key: linkKey, Conn: udp, Logger: tr.logger(o.NodeName),
			MemberFresh: fresh, OnChange: changed})
		if err != nil {
			t.Fatal(err)
		}
		o.Link, o.LinkAddress = m, udp.LocalAddr().String()
		o.HeartbeatPeriod, o.HeartbeatTimeout = DefaultMemberPeriod, DefaultMemberTimeout
		ctx, cancel := context.WithCancel(context.Background())
		go func() { _ = m.Run(ctx) }()
		t.Cleanup(cancel)
		links.Store(o.NodeName, scaleLink{el: el, stop: cancel, mon: m})
		mons.Add(1)
	}
}

func linkScale(t *testing.T, env *testbed.Env, mode string, n int, rest time.Duration, runs int) {
	var mons atomic.Int64
	var links sync.Map // node name -> scaleLink
	tr := &scaleTrace{}
	c := newCluster(t, env, fmt.Sprintf("scale-%s-%d", mode, n), 10, scaleOpts(t, mode, &mons, &links, tr))
	t0 := time.Now()
	for i := range n {
		name := fmt.Sprintf("node-%03d", i)
		a := c.startNode(name)
		if v, ok := links.Load(name); ok {
			v.(scaleLink).el.Store(a.e)
			a.e.Kick()
		}
	}
	waitFor(t, 5*time.Minute, "every node sees every other alive", func() bool {
		for _, a := range c.running() {
			if len(a.e.AliveNodes()) != n {
				return false
			}
		}
		return true
	})
	c.enqueueAll()
	owners := c.waitOwned(2 * time.Minute)
	up := time.Since(t0)
	// Let the start-up writes pass: every node's first renewals.
	time.Sleep(15 * time.Second)

	t.Logf("after start-up: %s", scaleCounters(c, &links))
	if path := os.Getenv("VIP_BENCH_LINK_CPUPROFILE"); path != "" {
		// From here on: at rest and the failovers, without the start-up.
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			t.Fatal(err)
		}
		defer func() {
			pprof.StopCPUProfile()
			_ = f.Close()
		}()
	}
	if rest > 0 {
		scaleRest(t, env, c, &links, mode, n, rest, mons.Load(), up)
	}
	var lat []time.Duration
	// Two survivors cannot tell a dead peer from being cut off (see
	// docs/liveness.md): keep three.
	for r := range min(runs, n-3+1) {
		victim := owners["svc-0"]
		var moved []string
		for s, o := range owners {
			if o == victim {
				moved = append(moved, s)
			}
		}
		tr.take()
		tr.armed.Store(true)
		cpu0, gc0 := pidCPU(os.Getpid()), gcCycles()
		died := time.Now()
		if v, ok := links.Load(victim); ok {
			v.(scaleLink).stop()
		}
		c.crash(victim)
		var after map[string]string
		deadline := time.Now().Add(time.Minute)
		for {
			after = c.owners()
			ok := true
			for _, s := range c.services {
				ok = ok && after[s] != "" && after[s] != victim
			}
			if ok {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("run %d: %s crashed, a minute later owners are %v; %s", r+1, victim, after, scaleCounters(c, &links))
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		cpu, gcs := pidCPU(os.Getpid())-cpu0, gcCycles()-gc0
		var worst time.Duration
		for _, s := range moved {
			worst = max(worst, c.announcedSince(s).Sub(died))
		}
		time.Sleep(100 * time.Millisecond) // the last nodes' liveness changes
		tr.armed.Store(false)
		lat = append(lat, worst)
		t.Logf("run %d: %s crashed, its %d Services announced elsewhere after %v; %s; this process used %v of CPU, %d GC cycles until then",
			r+1, victim, len(moved), worst.Round(time.Millisecond), traceSummary(tr.take(), victim, died), cpu, gcs)
		owners = after
	}
	if len(lat) > 0 {
		med, worst := stats(lat)
		t.Logf("RESULT failover at %d nodes (%s), holder crashed, %d runs: last of its Services announced elsewhere after median %v, worst %v (load %s): %v",
			n, mode, len(lat), med.Round(time.Millisecond), worst.Round(time.Millisecond), scaleLoad(), lat)
	}
	c.checkNoOverlap()
}

// scaleRest measures the cluster at rest: API writes/s, CPU of
// kube-apiserver, etcd and this process over rest (in link mode at least
// one membership period + 10s).
func scaleRest(t *testing.T, env *testbed.Env, c *cluster, links *sync.Map, mode string, n int, rest time.Duration, mons int64, up time.Duration) {
	api, etcd := childPID(t, "kube-apiserver"), childPID(t, "etcd")
	w0 := scaleAPIWrites(t, env)
	api0, etcd0, self0 := pidCPU(api), pidCPU(etcd), pidCPU(os.Getpid())
	// At least one whole membership period, so each node renews once.
	if period := max(DefaultMemberPeriod, time.Duration(n)*MemberPeriodPerNode) + 10*time.Second; mode == "link" && rest < period {
		rest = period
	}
	start := time.Now()
	time.Sleep(rest)
	el := time.Since(start)
	w1 := scaleAPIWrites(t, env)
	pc := func(d time.Duration) float64 { return 100 * d.Seconds() / el.Seconds() }
	apiPct, etcdPct, selfPct := pc(pidCPU(api)-api0), pc(pidCPU(etcd)-etcd0), pc(pidCPU(os.Getpid())-self0)
	t.Logf("RESULT %s %d electors in one process (link monitors %d, UDP on 127.0.0.1), real kube-apiserver + etcd, 10 Services; up in %v",
		mode, n, mons, up.Round(time.Second))
	t.Logf("RESULT at rest over %v (load %s): API writes %.2f/s cluster-wide (apiserver_request_total POST/PUT/PATCH/DELETE); CPU %% of a core: kube-apiserver %.1f, etcd %.1f, all electors %.1f (%.2f each)",
		el.Round(time.Second), scaleLoad(), float64(w1-w0)/el.Seconds(), apiPct, etcdPct, selfPct, selfPct/float64(n))

	t.Logf("RESULT counters after the rest: %s", scaleCounters(c, links))
}

// scaleLink is a scale-benchmark node's monitor hook-up.
type scaleLink struct {
	el   *atomic.Pointer[Elector]
	stop context.CancelFunc
	mon  *liveness.Monitor
}

// scaleCounters sums what the running nodes did: Lease writes by kind,
// takeovers, fences, and their monitors' suspicions, cleared suspicions,
// stalls and notices.
func scaleCounters(c *cluster, links *sync.Map) string {
	var hb, svc, tk, fe float64
	var st liveness.Stats
	for _, a := range c.running() {
		hb += testutil.ToFloat64(a.e.metrics.writes.WithLabelValues(writeHeartbeat))
		svc += testutil.ToFloat64(a.e.metrics.writes.WithLabelValues(writeService))
		tk += testutil.ToFloat64(a.e.metrics.takeovers)
		fe += testutil.ToFloat64(a.e.metrics.fences)
		if v, ok := links.Load(a.name); ok {
			s := v.(scaleLink).mon.Stats()
			st.Suspicions += s.Suspicions
			st.Cleared += s.Cleared
			st.Stalls += s.Stalls
			st.Notices += s.Notices
		}
	}
	return fmt.Sprintf("heartbeat writes %.0f, Service Lease writes %.0f, takeovers %.0f, fences %.0f; link: suspicions %d (cleared %d), stalls %d, notices %d",
		hb, svc, tk, fe, st.Suspicions, st.Cleared, st.Stalls, st.Notices)
}

// scaleAPIWrites sums kube-apiserver's write requests so far.
func scaleAPIWrites(t *testing.T, env *testbed.Env) int64 {
	raw, err := env.AdminClient().Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, "apiserver_request_total{") {
			continue
		}
		if !slices.ContainsFunc([]string{`verb="POST"`, `verb="PUT"`, `verb="PATCH"`, `verb="DELETE"`, `verb="APPLY"`},
			func(v string) bool { return strings.Contains(line, v) }) {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += int64(v)
		}
	}
	return sum
}

// childPID is the PID of this process's child whose program is named
// prog (the testbed's servers), or 0.
func childPID(t *testing.T, prog string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(st)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 2 || f[1] != strconv.Itoa(os.Getpid()) {
			continue
		}
		cl, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && filepath.Base(strings.SplitN(string(cl), "\x00", 2)[0]) == prog {
			return pid
		}
	}
	t.Logf("no child process %s", prog)
	return 0
}

// pidCPU is a process's user+system CPU time so far.
func pidCPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// gcCycles is the number of GC cycles this process completed.
func gcCycles() uint64 {
	s := []rtmetrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	rtmetrics.Read(s)
	if s[0].Value.Kind() != rtmetrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

func scaleLoad() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}
