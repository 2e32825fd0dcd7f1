//go:build e2e

package controlplane

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/vip-lb/vip/e2e/internal/benchout"
)

// benchRuns is how many failovers each scenario measures (env
// VIP_CP_BENCH_RUNS overrides).
func benchRuns() int {
	if n, err := strconv.Atoi(os.Getenv("VIP_CP_BENCH_RUNS")); err == nil && n > 0 {
		return n
	}
	return 10
}

// BenchmarkControlPlaneFailover measures the client-observed API outage
// through the control-plane VIP: 10 times the leader node dies (SIGKILL of
// its API server and agent), then 10 times only its API server dies. The
// figures (median, min, max) go to _out/bench.txt.
func BenchmarkControlPlaneFailover(b *testing.B) {
	c := newCluster(b, false)
	p := c.startProber()
	defer p.close()
	c.leader(b, nil, 60*time.Second)
	runs := benchRuns()
	var lines []string
	for _, f := range []failure{killNode, killAPIServer} {
		var ds []time.Duration
		for i := 0; i < runs; i++ {
			d, old, next := c.failover(b, p, f)
			ds = append(ds, d)
			b.Logf("%s run %d: %s -> %s, outage %v", f.name, i+1, old.name, next.name, d.Round(time.Millisecond))
		}
		unit := "outage-ms/node-death"
		if f.name == killAPIServer.name {
			unit = "outage-ms/apiserver-death"
		}
		med, line := summarize(f.name, ds)
		b.ReportMetric(float64(med.Milliseconds()), unit)
		lines = append(lines, line)
	}
	lines = append(lines, fmt.Sprintf("lease %s / renew deadline %s / retry %s (agent defaults), /readyz every 250ms (2 failures), client: new TLS connection every %v, %v timeout",
		"1.5s", "1s", "250ms", probePeriod, probeTimeout))
	if err := benchout.Write("BenchmarkControlPlaneFailover (3 API servers, one etcd, vip-agent --controlplane --arp)", lines...); err != nil {
		b.Log(err)
	}
}

// BenchmarkControlPlaneFailoverBGP measures the same outage in BGP mode
// (TestControlPlaneBGP's lab: the client goes through a BIRD router, hold
// time 3 s): 5 times the leader node dies, then 5 times its bridge port is
// cut (VIP_CP_BENCH_RUNS overrides the count).
func BenchmarkControlPlaneFailoverBGP(b *testing.B) {
	c := newLab(b, labOptions{bgp: true})
	p := c.startProber()
	defer p.close()
	c.leader(b, nil, 60*time.Second)
	runs := 5
	if os.Getenv("VIP_CP_BENCH_RUNS") != "" {
		runs = benchRuns()
	}
	var lines []string
	for _, f := range []failure{killNode, cutPort} {
		var ds []time.Duration
		for i := 0; i < runs; i++ {
			d, old, next := c.failover(b, p, f)
			ds = append(ds, d)
			b.Logf("%s run %d: %s -> %s, outage %v", f.name, i+1, old.name, next.name, d.Round(time.Millisecond))
		}
		unit := "outage-ms/node-death"
		if f.name == cutPort.name {
			unit = "outage-ms/port-cut"
		}
		med, line := summarize(f.name, ds)
		b.ReportMetric(float64(med.Milliseconds()), unit)
		lines = append(lines, line)
	}
	lines = append(lines, fmt.Sprintf("agent lease defaults (1.5s / 1s / 250ms), BIRD hold %d s keepalive %d s (negotiated), client through the router: new TLS connection every %v, %v timeout",
		bgpHold, bgpKeepalive, probePeriod, probeTimeout))
	if err := benchout.Write("BenchmarkControlPlaneFailoverBGP (3 API servers, one etcd, vip-agent --controlplane --bgp, BIRD router)", lines...); err != nil {
		b.Log(err)
	}
}

// summarize sorts ds and returns the median and a line of figures.
func summarize(name string, ds []time.Duration) (time.Duration, string) {
	slices.Sort(ds)
	med := ds[len(ds)/2]
	if len(ds)%2 == 0 {
		med = (ds[len(ds)/2-1] + ds[len(ds)/2]) / 2
	}
	return med, fmt.Sprintf("%s: client-observed outage median %v, min %v, max %v over %d runs (all: %v)",
		name, med.Round(time.Millisecond), ds[0].Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond), len(ds), rounded(ds))
}

func rounded(ds []time.Duration) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Round(10 * time.Millisecond).String()
	}
	return out
}
