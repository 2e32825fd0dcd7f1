//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vip-lb/vip/e2e/internal/benchout"
	"github.com/vip-lb/vip/e2e/lab"
)

// BenchmarkL2Liveness compares --liveness=lease and --liveness=link in one
// run (make bench-liveness; skipped unless VIP_BENCH_LIVENESS_NODES is set):
// for each node count (VIP_BENCH_LIVENESS_NODES, e.g. "3,20") and
// mode (VIP_BENCH_LIVENESS_MODES, default "lease,link") a lab of that many
// agent processes, each in its own network namespace on one bridge, with
// the real API server and one idle Service: API writes/s cluster-wide (the
// API server's own request counter), kube-apiserver, etcd and agent CPU
// over VIP_BENCH_LIVENESS_REST (default 30s) at rest; then the Service's
// owner's bridge port is cut VIP_BENCH_LIVENESS_RUNS times (default 5) and
// the client-observed outage measured.
func BenchmarkL2Liveness(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("e2e: needs root (network namespaces)")
	}
	if os.Getenv("VIP_BENCH_LIVENESS_NODES") == "" {
		b.Skip("set VIP_BENCH_LIVENESS_NODES (make bench-liveness runs each node count and mode in its own process)")
	}
	nodes := envInts(b, "VIP_BENCH_LIVENESS_NODES", "3")
	modes := strings.Split(envOr("VIP_BENCH_LIVENESS_MODES", "lease,link"), ",")
	rest := envDur(b, "VIP_BENCH_LIVENESS_REST", 30*time.Second)
	runs := int(envInts(b, "VIP_BENCH_LIVENESS_RUNS", "5")[0])
	for _, n := range nodes {
		for _, mode := range modes {
			b.Run(fmt.Sprintf("%s-%d", mode, n), func(b *testing.B) {
				livenessBench(b, mode, int(n), rest, runs)
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

// livenessLab starts a lab of n nodes in mode (lab.New directly: a large
// lab needs longer than l2Lab's 3 minutes).
func livenessLab(b testing.TB, mode string, n int) *lab.Lab {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	l, err := lab.New(ctx, lab.Options{Nodes: n, Liveness: mode, Logf: b.Logf,
		KeepDir:   os.Getenv("VIP_E2E_KEEP") == "1",
		AgentArgs: []string{"--settle-time=" + l2BenchSettle}})
	if err != nil {
		b.Fatalf("lab of %d nodes (%s): %v", n, mode, err)
	}
	b.Cleanup(func() {
		if err := l.Close(); err != nil {
			b.Errorf("closing lab: %v", err)
		}
	})
	return l
}

func livenessBench(b *testing.B, mode string, n int, rest time.Duration, runs int) {
	t0 := time.Now()
	l := livenessLab(b, mode, n)
	up := time.Since(t0)
	svcs := l2Create(b, l, "default", []string{"idle"})
	l2Holders(b, l, svcs)
	// Let start-up writes (Events, first Leases) pass before measuring, and
	// the first placement settle: an agent that saw no peer ready yet may
	// have taken the Service, and hands it to its preferred node after the
	// settle time.
	time.Sleep(10 * time.Second)
	home := l2CurrentHolders(b, l, svcs)["idle"]

	apiPID := findPID(b, "kube-apiserver", l.Dir)
	etcdPID := findPID(b, "--listen-peer-urls", l.Dir)
	w0, err := apiWrites(l)
	if err != nil {
		b.Fatal(err)
	}
	api0, etcd0 := procCPU(apiPID), procCPU(etcdPID)
	ag0 := map[string]time.Duration{}
	for _, nd := range l.Nodes {
		ag0[nd.Name] = procCPU(nd.Agent.PID())
	}
	load0 := loadAvg()
	start := time.Now()
	time.Sleep(rest)
	el := time.Since(start)
	w1, err := apiWrites(l)
	if err != nil {
		b.Fatal(err)
	}
	apiPct := pct(procCPU(apiPID)-api0, el)
	etcdPct := pct(procCPU(etcdPID)-etcd0, el)
	var agents []float64
	for _, nd := range l.Nodes {
		agents = append(agents, pct(procCPU(nd.Agent.PID())-ag0[nd.Name], el))
	}
	slices.Sort(agents)
	sum := 0.0
	for _, a := range agents {
		sum += a
	}
	writes := float64(w1-w0) / el.Seconds()
	lines := []string{
		fmt.Sprintf("--liveness=%s, %d agent processes (one network namespace each, one bridge), real kube-apiserver + etcd, one idle Service; lab up in %v",
			mode, n, up.Round(time.Second)),
		fmt.Sprintf("at rest over %v (load average %s at start, %s at end): API writes %.2f/s cluster-wide (kube-apiserver's apiserver_request_total, POST/PUT/PATCH/DELETE)",
			el.Round(time.Second), load0, loadAvg(), writes),
		fmt.Sprintf("CPU (%% of one core): kube-apiserver %.1f, etcd %.1f, agents all %.1f, each median %.2f / max %.2f",
			apiPct, etcdPct, sum, agents[len(agents)/2], agents[len(agents)-1]),
	}
	b.ReportMetric(writes, "api-writes/s")
	b.ReportMetric(apiPct, "apiserver-cpu-%")
	b.ReportMetric(etcdPct, "etcd-cpu-%")
	b.ReportMetric(agents[len(agents)/2], "agent-cpu-%-median")

	if runs > 0 {
		bs := &l2Bench{l: l, done: map[string][]l2Metric{}}
		outages, leases, fails := bs.handoffRuns(b, runs, svcs[0], home, l.CutPort, l.RestorePort)
		med, worst := l2Pct(outages, 0.5), slices.Max(outages)
		lines = append(lines,
			fmt.Sprintf("failover, owner's bridge port cut, %d runs (load average %s): client outage median %s, worst %s; Lease moved median %s, worst %s",
				runs, loadAvg(), l2Secs(med), l2Secs(worst), l2Secs(l2Pct(leases, 0.5)), l2Secs(slices.Max(leases))),
			"outages (s): "+l2Durs(outages),
			fmt.Sprintf("failed probes per run: %v", fails))
		b.ReportMetric(med.Seconds(), "outage-median-s")
		b.ReportMetric(worst.Seconds(), "outage-worst-s")
	}
	if err := benchout.Write(b.Name(), lines...); err != nil {
		b.Error(err)
	}
}

// BenchmarkL2LivenessHog keeps both cores busy (two busy-loop processes)
// for VIP_BENCH_HOG (e.g. 10m; unset: skipped, it is long: make
// bench-liveness sets it) while three agents in each mode of
// VIP_BENCH_LIVENESS_MODES hold 30 Services with nothing else happening:
// every takeover or fence in that time is false.
func BenchmarkL2LivenessHog(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("e2e: needs root (network namespaces)")
	}
	if os.Getenv("VIP_BENCH_HOG") == "" {
		b.Skip("set VIP_BENCH_HOG (e.g. 10m) to run the false-takeover run under CPU load (make bench-liveness)")
	}
	d := envDur(b, "VIP_BENCH_HOG", 10*time.Minute)
	for _, mode := range strings.Split(envOr("VIP_BENCH_LIVENESS_MODES", "lease,link"), ",") {
		b.Run(mode, func(b *testing.B) {
			l := livenessLab(b, mode, 3)
			svcs := l2Create(b, l, lab.ScaleNamespace, l2Names("hog", 30))
			l2Holders(b, l, svcs)
			// Hand-offs to the preferred nodes (rebalancing after the
			// settle time) finish before the measured period starts.
			time.Sleep(10 * time.Second)
			before := l2CurrentHolders(b, l, svcs)
			count := func() (float64, float64, float64) {
				var tk, fe, wr float64
				for _, nd := range l.Nodes {
					tk += linkMetric(b, l, nd.Name, "vip_agent_lease_takeovers_total", "")
					fe += linkMetric(b, l, nd.Name, "vip_agent_fences_total", "")
					wr += linkMetric(b, l, nd.Name, "vip_agent_lease_writes_total", `kind="service"`)
				}
				return tk, fe, wr
			}
			tk0, fe0, wr0 := count()
			stop := startHogs(b, 2)
			load0 := loadAvg()
			time.Sleep(d)
			load1 := loadAvg()
			stop()
			tk1, fe1, wr1 := count()
			after := l2CurrentHolders(b, l, svcs)
			moved := 0
			for k, v := range before {
				if after[k] != v {
					moved++
				}
			}
			if err := benchout.Write(b.Name(),
				fmt.Sprintf("--liveness=%s, 3 agents, 30 Services, two busy-loop processes on the 2 cores for %v (load average %s at start, %s at end)", mode, d, load0, load1),
				fmt.Sprintf("false takeovers %.0f, fences %.0f, Service Lease writes %.0f (every move writes), Services whose holder differs at the end %d",
					tk1-tk0, fe1-fe0, wr1-wr0, moved),
			); err != nil {
				b.Error(err)
			}
			b.ReportMetric(tk1-tk0, "false-takeovers")
			b.ReportMetric(fe1-fe0, "fences")
			b.ReportMetric(wr1-wr0, "service-lease-writes")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// startHogs starts n busy-loop processes; the returned func kills them
// (by PID).
func startHogs(b testing.TB, n int) func() {
	var cmds []*exec.Cmd
	for range n {
		c := exec.Command("sh", "-c", "while :; do :; done")
		if err := c.Start(); err != nil {
			b.Fatal(err)
		}
		cmds = append(cmds, c)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		for _, c := range cmds {
			_ = c.Process.Signal(syscall.SIGKILL)
			_ = c.Wait()
		}
	}
	b.Cleanup(stop)
	return stop
}

// apiWrites sums the API server's write requests so far.
func apiWrites(l *lab.Lab) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	raw, err := l.Admin.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return 0, fmt.Errorf("scraping kube-apiserver: %w", err)
	}
	var sum int64
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, "apiserver_request_total{") {
			continue
		}
		write := false
		for _, v := range []string{`verb="POST"`, `verb="PUT"`, `verb="PATCH"`, `verb="DELETE"`, `verb="APPLY"`} {
			write = write || strings.Contains(line, v)
		}
		if !write {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			sum += int64(v)
		}
	}
	return sum, nil
}

func pct(d, over time.Duration) float64 { return 100 * d.Seconds() / over.Seconds() }

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func envInts(b testing.TB, k, def string) []int64 {
	var out []int64
	for _, s := range strings.Split(envOr(k, def), ",") {
		v, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil {
			b.Fatalf("%s: %v", k, err)
		}
		out = append(out, v)
	}
	return out
}

func envDur(b testing.TB, k string, def time.Duration) time.Duration {
	v := os.Getenv(k)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		b.Fatalf("%s: %v", k, err)
	}
	return d
}
