//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vip-lb/vip/e2e/lab"
)

// TestL2Link runs the layer 2 failover scenarios with --liveness=link
// (heartbeats on the link, membership renewed every 10s) plus the
// partitions that tell link liveness from API liveness: a node cut from
// the link but not from the API loses its Services; a node cut from the API
// but not from the link keeps them; the API server down moves nothing; a
// split link never has one address answered from two MACs in one half.
func TestL2Link(t *testing.T) {
	l := l2Lab(t, sharedLabOptions(lab.Options{Liveness: "link", AgentArgs: []string{"--settle-time=3s"}}))
	s := &l2Suite{l: l}
	for _, st := range []struct {
		name string
		f    func(*testing.T)
	}{
		{"Spread", s.spread},
		{"AgentKilled", s.agentKilled},
		{"PortCut", s.portCut},
		{"LinkCutAPIKept", s.linkCut},
		{"APICutLinkKept", s.apiCut},
		{"SplitLink", s.splitLink},
		{"GracefulStop", s.graceful},
		{"APIServerDown", s.apiDown},
	} {
		if !t.Run(st.name, st.f) && st.name == "Spread" {
			t.Fatal("the Services the other subtests move could not be set up")
		}
	}
}

// linkCut: the owner's bridge port drops everything but its traffic with
// the API server: clients and peers lose it while it still reaches the
// API. It must stop announcing (it hears none of its peers) and its
// Services move.
func (s *l2Suite) linkCut(t *testing.T) {
	s.move(t, s.l.CutLink, s.l.RestoreLink, false)
}

// apiCut: the owner loses the API server but not the link: it keeps
// serving, nobody takes over, nobody fences. Checked after its membership
// renewal has failed (a scrape from the client's side of the link).
func (s *l2Suite) apiCut(t *testing.T) {
	s.needSpread(t)
	l := s.l
	before := l2CurrentHolders(t, l, s.svcs)
	node, held := l2Pick(before)
	probe := l2Find(s.svcs, held[0])
	p := l.StartProbe(probe.VIP, lab.ServicePort, 50*time.Millisecond, 200*time.Millisecond)
	errs0 := linkMetric(t, l, node, "vip_agent_election_errors_total", `op="heartbeat"`)
	fences0 := linkMetric(t, l, node, "vip_agent_fences_total", "")
	if err := l.CutAPI(node); err != nil {
		p.Stop()
		t.Fatal(err)
	}
	cut := time.Now()
	restored := false
	defer func() {
		if !restored {
			_ = l.RestoreAPI(node)
		}
	}()
	// The membership renewal comes every 10s and times out after 20s.
	deadline := time.Now().Add(60 * time.Second)
	for linkMetric(t, l, node, "vip_agent_election_errors_total", `op="heartbeat"`) <= errs0 {
		if time.Now().After(deadline) {
			p.Stop()
			t.Fatalf("%s's membership renewal never failed after the API cut", node)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("%s cut from the API: its renewal failed %v later", node, time.Since(cut).Round(time.Millisecond))
	if f := linkMetric(t, l, node, "vip_agent_fences_total", ""); f != fences0 {
		t.Errorf("%s fenced itself (%v fences) although it is on the link", node, f-fences0)
	}
	var heldSvcs []l2Service
	for _, name := range held {
		heldSvcs = append(heldSvcs, l2Find(s.svcs, name))
	}
	// Still bound on the cut node alone and answering the client.
	l2CheckServed(t, l, heldSvcs, before, "")
	rs := p.Stop()
	// A probe may starve on a loaded machine; an outage is a run of them.
	run, longest := 0, 0
	for _, r := range rs {
		if r.Err != nil {
			run++
			longest = max(longest, run)
		} else {
			run = 0
		}
	}
	t.Logf("%d of %d probes of %s failed while its owner was cut from the API only (longest run %d)", lab.Failures(rs), len(rs), probe, longest)
	if longest >= 3 {
		t.Errorf("%d consecutive probes of %s failed while its owner was cut from the API only", longest, probe)
	}
	if err := l.RestoreAPI(node); err != nil {
		t.Fatal(err)
	}
	restored = true
	after := l2CurrentHolders(t, l, s.svcs)
	if !maps.Equal(after, before) {
		t.Errorf("Lease holders changed during an API cut of %s:\n was %v\n now %v", node, before, after)
	}
	for _, n := range l.Nodes {
		if v := linkMetric(t, l, n.Name, "vip_agent_lease_takeovers_total", ""); v != 0 {
			t.Logf("%s: vip_agent_lease_takeovers_total %v (earlier subtests)", n.Name, v)
		}
	}
	l2WaitHome(t, l, s.svcs, s.home)
}

// splitLink: the bridge splits into {the busiest owner} and {the others and
// the client}; the API server reaches both. The lone node hears none of
// its peers (the API says they exist): it stops announcing; the other half
// takes its addresses over. At no time does the client's half see one
// address answered from two MACs; each address is bound on at most one
// node of each half. Joined again, everything returns home.
func (s *l2Suite) splitLink(t *testing.T) {
	s.needSpread(t)
	l := s.l
	before := l2CurrentHolders(t, l, s.svcs)
	node, moved := l2Pick(before)
	if err := l.SplitLink(node); err != nil {
		t.Fatal(err)
	}
	joined := false
	defer func() {
		if !joined {
			_ = l.JoinLink()
		}
		l2WaitHome(t, l, s.svcs, s.home)
	}()
	ctx := l2Ctx(t, 30*time.Second)
	for _, name := range moved {
		if _, err := l.WaitHolder(ctx, lab.ScaleNamespace, name, func(h string) bool { return h != "" && h != node }); err != nil {
			t.Fatalf("%v\n%s", err, l.Logs(30))
		}
	}
	after := l2CurrentHolders(t, l, s.svcs)
	l2CheckServed(t, l, slices.Collect(func(yield func(l2Service) bool) {
		for _, n := range moved {
			if !yield(l2Find(s.svcs, n)) {
				return
			}
		}
	}), after, "")
	for _, sv := range s.svcs {
		macs, err := l.ArpingMACs(l2Ctx(t, 10*time.Second), sv.VIP, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(slices.Compact(slices.Sorted(slices.Values(macs)))) > 1 {
			t.Errorf("%s answered from %v in the client's half", sv, macs)
		}
		on, err := l.BoundOn(sv.VIP)
		if err != nil {
			t.Fatal(err)
		}
		others := slices.DeleteFunc(slices.Clone(on), func(n string) bool { return n == node })
		if len(others) > 1 {
			t.Errorf("%s bound on %v in one half", sv, others)
		}
	}
	t.Logf("split {%s} | {rest, client}: its %d Services moved to the client's half, each answered by one MAC", node, len(moved))
	if err := l.JoinLink(); err != nil {
		t.Fatal(err)
	}
	joined = true
}

// linkMetric reads a counter from a node's agent, from the client's
// namespace (the API namespace may be cut off from it); labels, when set,
// must appear in the series' labels. Series are summed.
func linkMetric(t testing.TB, l *lab.Lab, node, name, labels string) float64 {
	t.Helper()
	n := l.Node(node)
	tr := &http.Transport{DialContext: lab.DialerIn(l.Client), DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s:%d/metrics", n.IP4, lab.MetricsPort), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("scraping %s: %v", node, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, name) || (labels != "" && !strings.Contains(line, labels)) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}
