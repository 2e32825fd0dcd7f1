//go:build e2e

package e2e

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vip-lb/vip/e2e/lab"
)

// TestL2 is the layer 2 end-to-end suite: one lab (real etcd, kube-apiserver,
// vip-ccm and three real vip-agent processes in network namespaces, run with
// the RBAC from deploy/), observed from a client namespace. The subtests
// share the lab and run in order; each one leaves it as it found it.
func TestL2(t *testing.T) {
	l := l2Lab(t, sharedLabOptions(lab.Options{}))
	s := &l2Suite{l: l}
	for _, st := range []struct {
		name string
		f    func(*testing.T)
	}{
		{"ServiceGetsAddress", s.serviceGetsAddress},
		{"Spread", s.spread},
		{"ExternalTrafficPolicyLocal", s.local},
		{"SharedAddress", s.sharedAddress},
		{"HeartbeatPublishes", s.heartbeatPublishes},
		{"NoReadyEndpoints", s.noReadyEndpoints},
		{"IPv6", s.ipv6},
		{"PortCut", s.portCut},
		{"AgentKilled", s.agentKilled},
		{"KillRestartNoStray", s.killRestart},
		{"GracefulStop", s.graceful},
		{"RollingRestart", s.rolling},
		{"ServiceDeleted", s.deleted},
		{"TerminatingWithdrawn", s.terminating},
		{"AddressInUse", s.addressInUse},
		{"APIServerDown", s.apiDown},
		{"APIServerDownPeersPause", s.apiDownPeersPause},
	} {
		if !t.Run(st.name, st.f) && st.name == "Spread" {
			t.Fatal("the Services the other subtests move could not be set up")
		}
	}
}

// l2Suite holds what the subtests share: the lab and 30 Services spread over
// the nodes, with the node each one prefers when all nodes are alive.
type l2Suite struct {
	l    *lab.Lab
	svcs []l2Service
	home map[string]string
}

func (s *l2Suite) needSpread(t *testing.T) {
	if s.home == nil {
		t.Skip("needs the Services of the Spread subtest")
	}
}

// serviceGetsAddress: a Service gets an address from the global pool, one
// node takes its Lease, binds the VIP and announces it; the client learns
// the owner's MAC from the announcement and reaches the owner's listener.
func (s *l2Suite) serviceGetsAddress(t *testing.T) {
	l := s.l
	svcs := l2Create(t, l, "default", []string{"basic"})
	defer l2DeleteAll(t, l, svcs)
	if !l.GlobalPool4().Contains(svcs[0].VIP) {
		t.Fatalf("address %s is not from the global pool %s", svcs[0].VIP, l.GlobalPool4())
	}
	holders := l2Holders(t, l, svcs)
	l2CheckServed(t, l, svcs, holders, "")
	ev := l2Events(t, l, svcs[0], "Announcing")
	want := "from " + holders["basic"]
	if !slices.ContainsFunc(ev, func(m string) bool { return strings.Contains(m, want) && strings.Contains(m, svcs[0].VIP.String()) }) {
		t.Errorf("no Announcing Event naming %s and %q on the Service; got %q", svcs[0].VIP, want, ev)
	}
	t.Logf("%s held by %s, reached from the client", svcs[0], holders["basic"])
}

// spread: 30 Services are spread over all three nodes, each reachable on
// its owner.
func (s *l2Suite) spread(t *testing.T) {
	l := s.l
	svcs := l2Create(t, l, lab.ScaleNamespace, l2Names("spread", 30))
	l2Holders(t, l, svcs)
	// Home is where placement settles: an agent that saw its peers ready
	// a moment late holds some Services until rebalancing (settle time 3 s)
	// hands them to their preferred nodes.
	holders := l2StableHolders(t, l, svcs, 5*time.Second, time.Minute)
	by := l2ByHolder(holders)
	counts := map[string]int{}
	for _, n := range l.Nodes {
		counts[n.Name] = len(by[n.Name])
		if len(by[n.Name]) == 0 {
			t.Errorf("node %s holds none of the 30 Services: %v", n.Name, holders)
		}
	}
	t.Logf("30 Services per node: %v", counts)
	l2CheckServed(t, l, svcs, holders, "")
	l2CheckNoStray(t, l, svcs)
	s.svcs, s.home = svcs, holders
}

// move runs one node-failure scenario against the spread Services: the
// node holding the most of them is disrupted; each of its Services must
// move to another node and be reachable there (the client's neighbour
// entry updated by the announcement), every other Service must stay where
// it was. leftBound says the disrupted node may keep its addresses bound
// (a crashed agent cannot remove them). recover brings the node back; then
// every Service must return to its preferred node with nothing stray.
func (s *l2Suite) move(t *testing.T, disrupt, recover func(node string) error, leftBound bool) {
	s.needSpread(t)
	l := s.l
	before := l2CurrentHolders(t, l, s.svcs)
	node, moved := l2Pick(before)
	probe := l2Find(s.svcs, moved[0])
	p := l.StartProbe(probe.VIP, lab.ServicePort, 10*time.Millisecond, 50*time.Millisecond)
	time.Sleep(200 * time.Millisecond)
	t0 := time.Now()
	if err := disrupt(node); err != nil {
		p.Stop()
		t.Fatal(err)
	}
	defer func() {
		if err := recover(node); err != nil {
			t.Errorf("recovering %s: %v", node, err)
		}
		l2WaitHome(t, l, s.svcs, s.home)
	}()

	ctx := l2Ctx(t, 30*time.Second)
	var movedSvcs []l2Service
	for _, name := range moved {
		if _, err := l.WaitHolder(ctx, lab.ScaleNamespace, name, func(h string) bool { return h != "" && h != node }); err != nil {
			p.Stop()
			t.Fatalf("%v\n%s", err, l.Logs(30))
		}
		movedSvcs = append(movedSvcs, l2Find(s.svcs, name))
	}
	tMoved := time.Since(t0)
	after := l2CurrentHolders(t, l, s.svcs)
	for _, name := range l2Others(before, moved) {
		if after[name] != before[name] {
			t.Errorf("Service %s moved from %s to %s although %s was not disrupted", name, before[name], after[name], before[name])
		}
	}
	tolerate := ""
	if leftBound {
		tolerate = node
	}
	l2CheckServed(t, l, movedSvcs, after, tolerate)
	rs := p.Stop()
	out, fails, ok := lab.Outage(rs, after[probe.Name])
	if !ok {
		t.Fatalf("the client never reached %s on its new owner %s", probe, after[probe.Name])
	}
	t.Logf("%s disrupted: its %d Services moved within %v (%v), other %d stayed; client outage on %s: %v (%d failed probes)",
		node, len(moved), tMoved.Round(time.Millisecond), l2Count(after, moved), len(before)-len(moved), probe, out.Round(time.Millisecond), fails)
	if out > 5*time.Second {
		t.Errorf("outage %v on %s is far beyond the failover budget", out, probe)
	}
}

// l2Count counts the new holders of the moved Services.
func l2Count(holders map[string]string, names []string) map[string]int {
	out := map[string]int{}
	for _, n := range names {
		out[holders[n]]++
	}
	return out
}

// portCut: the owner's bridge port goes down (node death as the network
// sees it). The cut-off node also fences itself: it cannot reach the API
// server or any peer, so it withdraws its addresses.
func (s *l2Suite) portCut(t *testing.T) {
	s.move(t, s.l.CutPort, s.l.RestorePort, false)
}

// agentKilled: SIGKILL of the owner's agent. The dead agent's addresses stay
// bound until it restarts and cleans them up (checked by the return home).
func (s *l2Suite) agentKilled(t *testing.T) {
	l := s.l
	s.move(t, func(n string) error { return l.StopAgent(n, syscall.SIGKILL) },
		func(n string) error { return l.StartAgent(l2Ctx(t, time.Minute), n) }, true)
}

// killRestart: SIGKILL then immediate restart of an agent that holds VIPs:
// the new agent removes what the old one left, and afterwards every VIP is
// bound exactly on its Lease holder and reachable.
func (s *l2Suite) killRestart(t *testing.T) {
	s.needSpread(t)
	l := s.l
	before := l2CurrentHolders(t, l, s.svcs)
	node, held := l2Pick(before)
	pre, err := l.NodeVIPs(node)
	if err != nil {
		t.Fatal(err)
	}
	if len(pre) != len(held) {
		t.Fatalf("%s has %d VIPs bound for %d Leases: %v", node, len(pre), len(held), pre)
	}
	if err := l.StopAgent(node, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	left, err := l.NodeVIPs(node)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) == 0 {
		t.Fatalf("expected the killed agent to leave its %d addresses bound", len(pre))
	}
	if err := l.StartAgent(l2Ctx(t, time.Minute), node); err != nil {
		t.Fatal(err)
	}
	l2CheckNoStray(t, l, s.svcs)
	after := l2CurrentHolders(t, l, s.svcs)
	l2CheckServed(t, l, s.svcs, after, "")
	t.Logf("%s killed with %d VIPs bound and restarted: nothing stray, holders now %v", node, len(left), l2Count(after, slices.Collect(maps.Keys(after))))
	l2WaitHome(t, l, s.svcs, s.home)
}

// graceful: SIGTERM of an owner. It hands its Leases to their successors
// and withdraws each VIP once its successor announced it (make before
// break) before it exits: no client packet is dropped (a probe whose
// connection straddles the switch may be reset), and the stopped node has
// no VIP left on eth0.
func (s *l2Suite) graceful(t *testing.T) {
	s.needSpread(t)
	l := s.l
	before := l2CurrentHolders(t, l, s.svcs)
	node, moved := l2Pick(before)
	probe := l2Find(s.svcs, moved[0])
	// A timeout below TCP's 1 s SYN retransmission: a dropped SYN fails.
	p := l.StartProbe(probe.VIP, lab.ServicePort, 10*time.Millisecond, healthyProbeTimeout)
	time.Sleep(200 * time.Millisecond)
	t0 := time.Now()
	if err := l.StopAgent(node, syscall.SIGTERM); err != nil {
		p.Stop()
		t.Fatal(err)
	}
	stopTook := time.Since(t0)
	defer func() {
		l2Restore(t, l, node)
		l2WaitHome(t, l, s.svcs, s.home)
	}()
	if vips, err := l.NodeVIPs(node); err != nil || len(vips) != 0 {
		p.Stop()
		t.Fatalf("after SIGTERM %s still has %v bound (err %v)", node, vips, err)
	}
	if err := s.l.Node(node).Agent.ExitErr(); err != nil {
		t.Errorf("agent on %s exited with %v after SIGTERM", node, err)
	}
	ctx := l2Ctx(t, 30*time.Second)
	var movedSvcs []l2Service
	for _, name := range moved {
		if _, err := l.WaitHolder(ctx, lab.ScaleNamespace, name, func(h string) bool { return h != "" && h != node }); err != nil {
			p.Stop()
			t.Fatal(err)
		}
		movedSvcs = append(movedSvcs, l2Find(s.svcs, name))
	}
	after := l2CurrentHolders(t, l, s.svcs)
	for _, name := range l2Others(before, moved) {
		if after[name] != before[name] {
			t.Errorf("Service %s moved from %s to %s on %s's graceful stop", name, before[name], after[name], node)
		}
	}
	l2CheckServed(t, l, movedSvcs, after, "")
	time.Sleep(100 * time.Millisecond)
	rs := p.Stop()
	out, fails, ok := lab.Outage(rs, after[probe.Name])
	if !ok {
		t.Fatalf("the client never reached %s on its new owner %s", probe, after[probe.Name])
	}
	t.Logf("SIGTERM of %s: agent exited in %v; %d Services handed off (%v); client outage on %s: %v (%d failed probes)",
		node, stopTook.Round(time.Millisecond), len(moved), l2Count(after, moved), probe, out.Round(time.Millisecond), fails)
	var dropped []string
	for _, r := range rs {
		var ne net.Error
		if errors.As(r.Err, &ne) && ne.Timeout() {
			dropped = append(dropped, r.At.Format("15:04:05.000")+": "+r.Err.Error())
		}
	}
	if len(dropped) > 0 {
		t.Errorf("%d probes of %s timed out during %s's graceful stop (packets dropped): %v", len(dropped), probe, node, dropped)
	}
}

// rolling: every agent is restarted in turn (SIGTERM, start, ready), as a
// DaemonSet rolling update does, while the client probes one VIP of each
// node. Every VIP stays reachable but for short hand-offs, and the stopped
// node never keeps an address.
func (s *l2Suite) rolling(t *testing.T) {
	s.needSpread(t)
	l := s.l
	before := l2CurrentHolders(t, l, s.svcs)
	by := l2ByHolder(before)
	probes := map[string]*lab.Prober{}
	var watched []l2Service
	for _, n := range l.Nodes {
		if len(by[n.Name]) == 0 {
			continue
		}
		sv := l2Find(s.svcs, by[n.Name][0])
		watched = append(watched, sv)
		probes[sv.Name] = l.StartProbe(sv.VIP, lab.ServicePort, 10*time.Millisecond, 50*time.Millisecond)
	}
	stopAll := func() map[string][]lab.ProbeResult {
		out := map[string][]lab.ProbeResult{}
		for name, p := range probes {
			out[name] = p.Stop()
		}
		return out
	}
	for _, n := range l.Nodes {
		t0 := time.Now()
		if err := l.StopAgent(n.Name, syscall.SIGTERM); err != nil {
			stopAll()
			t.Fatal(err)
		}
		if vips, err := l.NodeVIPs(n.Name); err != nil || len(vips) != 0 {
			stopAll()
			t.Fatalf("after SIGTERM %s still has %v bound (err %v)", n.Name, vips, err)
		}
		if err := l.StartAgent(l2Ctx(t, time.Minute), n.Name); err != nil {
			stopAll()
			t.Fatal(err)
		}
		t.Logf("%s restarted in %v", n.Name, time.Since(t0).Round(time.Millisecond))
	}
	l2WaitHome(t, l, s.svcs, s.home)
	time.Sleep(200 * time.Millisecond)
	res := stopAll()
	for _, sv := range watched {
		rs := res[sv.Name]
		worst, total := l2Gaps(rs)
		t.Logf("%s during the rolling restart: %d probes, %d failed, longest gap %v", sv, len(rs), total, worst.Round(time.Millisecond))
		if worst > time.Second {
			t.Errorf("%s was unreachable for %v during the rolling restart", sv, worst)
		}
		if last := rs[len(rs)-1]; last.Err != nil || last.Node != s.home[sv.Name] {
			t.Errorf("%s: last probe answered by %q (%v), want %s", sv, last.Node, last.Err, s.home[sv.Name])
		}
	}
}

// l2Gaps returns the longest run of failed probes (first failure to next
// success) and the number of failures.
func l2Gaps(rs []lab.ProbeResult) (time.Duration, int) {
	var worst time.Duration
	fails := 0
	start := time.Time{}
	for _, r := range rs {
		if r.Err != nil {
			fails++
			if start.IsZero() {
				start = r.At
			}
			continue
		}
		if !start.IsZero() {
			worst = max(worst, r.At.Sub(start))
			start = time.Time{}
		}
	}
	if !start.IsZero() {
		worst = max(worst, rs[len(rs)-1].At.Sub(start))
	}
	return worst, fails
}

// local: externalTrafficPolicy Local restricts the candidates to nodes with
// a ready local endpoint: the owner is node2 while the only endpoint is on
// node2, and the VIP moves to node3 when the endpoint does.
func (s *l2Suite) local(t *testing.T) {
	l := s.l
	ctx := l2Ctx(t, time.Minute)
	if err := l.SetEndpoints(ctx, "default", "local", "node2"); err != nil {
		t.Fatal(err)
	}
	svcs := l2Create(t, l, "default", []string{"local"}, lab.Local())
	defer l2DeleteAll(t, l, svcs)
	h := l2Holders(t, l, svcs)
	if h["local"] != "node2" {
		t.Fatalf("with its only endpoint on node2, the Service is held by %s", h["local"])
	}
	l2CheckServed(t, l, svcs, h, "")
	if err := l.SetEndpoints(ctx, "default", "local", "node3"); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if _, err := l.WaitHolder(ctx, "default", "local", func(h string) bool { return h == "node3" }); err != nil {
		t.Fatalf("%v\n%s", err, l.Logs(30))
	}
	l2CheckServed(t, l, svcs, map[string]string{"local": "node3"}, "")
	t.Logf("endpoint moved node2 -> node3: VIP %s followed in %v", svcs[0].VIP, time.Since(t0).Round(time.Millisecond))
}

// ipv6: an IPv6 Service gets an address from the IPv6 range, is bound and
// reachable on its owner; when the owner dies, the new owner's unsolicited
// neighbour advertisement updates the client's existing neighbour entry
// (no client traffic in between, so nothing else could have updated it).
func (s *l2Suite) ipv6(t *testing.T) {
	l := s.l
	svcs := l2Create(t, l, "default", []string{"six"}, lab.IPv6Only())
	defer l2DeleteAll(t, l, svcs)
	sv := svcs[0]
	if !sv.VIP.Is6() {
		t.Fatalf("IPv6 Service got %s", sv.VIP)
	}
	h := l2Holders(t, l, svcs)
	owner := h["six"]
	ctx := l2Ctx(t, time.Minute)
	if err := l.WaitBound(ctx, sv.VIP, owner); err != nil {
		t.Fatal(err)
	}
	// An unsolicited NA only updates an entry the client already has.
	if err := l.ClientPing(ctx, sv.VIP); err != nil {
		t.Fatal(err)
	}
	l2CheckServed(t, l, svcs, h, "")
	if err := l.CutPort(owner); err != nil {
		t.Fatal(err)
	}
	defer func() {
		l2Restore(t, l, owner)
		if err := l.WaitSettled(l2Ctx(t, time.Minute), time.Minute); err != nil {
			t.Error(err)
		}
		if s.home != nil {
			l2WaitHome(t, l, s.svcs, s.home)
		}
	}()
	t0 := time.Now()
	next, err := l.WaitHolder(ctx, "default", "six", func(h string) bool { return h != "" && h != owner })
	if err != nil {
		t.Fatalf("%v\n%s", err, l.Logs(30))
	}
	if err := l.WaitClientNeigh(l2Ctx(t, 5*time.Second), sv.VIP, next); err != nil {
		t.Fatalf("unsolicited neighbour advertisement: %v", err)
	}
	took := time.Since(t0)
	if _, err := l.WaitServedBy(ctx, sv.VIP, lab.ServicePort, func(n string) bool { return n == next }); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s moved %s -> %s; client's neighbour entry updated within %v of the port cut", sv, owner, next, took.Round(time.Millisecond))
}

// apiDown: the API server is stopped for 30 s. Nobody can take over, so no
// agent may withdraw anything (self-fencing must not trigger when the
// peers cannot renew either): the client keeps reaching every probed VIP
// throughout, and afterwards nothing has moved.
func (s *l2Suite) apiDown(t *testing.T) {
	s.needSpread(t)
	l := s.l
	before := l2CurrentHolders(t, l, s.svcs)
	boundBefore, err := l.AllBound()
	if err != nil {
		t.Fatal(err)
	}
	by := l2ByHolder(before)
	probes := map[string]*lab.Prober{}
	for _, n := range l.Nodes {
		if len(by[n.Name]) > 0 {
			sv := l2Find(s.svcs, by[n.Name][0])
			probes[sv.Name] = l.StartProbe(sv.VIP, lab.ServicePort, 100*time.Millisecond, healthyProbeTimeout)
		}
	}
	if err := l.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	restarted := false
	defer func() {
		if !restarted {
			if err := l.StartAPIServer(l2Ctx(t, 2*time.Minute)); err != nil {
				t.Errorf("restarting the API server: %v", err)
			}
		}
	}()
	down := time.Now()
	for time.Since(down) < 30*time.Second {
		time.Sleep(time.Second)
		bound, err := l.AllBound()
		if err != nil {
			t.Fatal(err)
		}
		if !maps.EqualFunc(bound, boundBefore, slices.Equal[[]netip.Addr]) {
			t.Errorf("%v after the API server stopped, bound addresses changed:\n was %v\n now %v",
				time.Since(down).Round(time.Second), boundBefore, bound)
			break
		}
	}
	for _, n := range l.Nodes {
		if f, err := l.AgentMetric(l2Ctx(t, 5*time.Second), n.Name, "vip_agent_fenced", nil); err != nil || f != 0 {
			t.Errorf("%s: vip_agent_fenced=%v (err %v) while the API server is down for everyone", n.Name, f, err)
		}
	}
	t0 := time.Now()
	if err := l.StartAPIServer(l2Ctx(t, 2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	restarted = true
	t.Logf("API server down for %v, back in %v", t0.Sub(down).Round(time.Second), time.Since(t0).Round(time.Millisecond))
	if err := l.WaitSettled(l2Ctx(t, time.Minute), time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("agents settled %v after the restart", time.Since(t0).Round(time.Millisecond))
	time.Sleep(2 * time.Second)
	after := l2CurrentHolders(t, l, s.svcs)
	if !maps.Equal(before, after) {
		t.Errorf("holders changed across the API server outage:\n was %v\n now %v", before, after)
	}
	l2CheckNoStray(t, l, s.svcs)
	t.Logf("checked %v after the restart", time.Since(t0).Round(time.Millisecond))
	for name, p := range probes {
		rs := p.Stop()
		if f := lab.Failures(rs); f > 0 {
			worst, _ := l2Gaps(rs)
			var fails []string
			for i, r := range rs {
				if r.Err != nil {
					fails = append(fails, fmt.Sprintf("#%d at +%v took %v: %v", i, r.At.Sub(rs[0].At).Round(time.Millisecond),
						r.Took.Round(time.Millisecond), r.Err))
				}
			}
			t.Errorf("%s: %d of %d probes failed during the API server outage (longest gap %v):\n%s",
				name, f, len(rs), worst, strings.Join(fails, "\n"))
		} else {
			t.Logf("%s: all %d probes answered during the API server outage", name, len(rs))
		}
	}
}

// apiDownPeersPause: while the API server is down, the peers of one node
// stop answering for 400 ms (SIGSTOP of their agents: a GC pause, CPU
// starvation or a short network blip look the same to it). Nobody can
// take over while the API server is down, so that node must keep its VIPs.
// (Before eb4cedc and dce2d5c one probe round of 100 ms without an answer
// made it fence and withdraw everything until the API server was back.)
func (s *l2Suite) apiDownPeersPause(t *testing.T) {
	s.needSpread(t)
	l := s.l
	holders := l2CurrentHolders(t, l, s.svcs)
	victim, _ := l2Pick(holders)
	before, err := l.NodeVIPs(victim)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := l.StartAPIServer(l2Ctx(t, 2*time.Minute)); err != nil {
			t.Errorf("restarting the API server: %v", err)
		}
		if err := l.WaitSettled(l2Ctx(t, time.Minute), time.Minute); err != nil {
			t.Error(err)
		}
		l2WaitHome(t, l, s.svcs, s.home)
	}()
	time.Sleep(2 * time.Second)
	var peers []*lab.Node
	for _, n := range l.Nodes {
		if n.Name != victim {
			peers = append(peers, n)
		}
	}
	for _, n := range peers {
		if err := n.Agent.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(400 * time.Millisecond)
	for _, n := range peers {
		if err := n.Agent.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(2 * time.Second)
	after, err := l.NodeVIPs(victim)
	if err != nil {
		t.Fatal(err)
	}
	fenced, _ := l.AgentMetric(l2Ctx(t, 5*time.Second), victim, "vip_agent_fenced", nil)
	if !slices.Equal(before, after) || fenced != 0 {
		t.Errorf("API server down, peers paused 400ms: %s fenced=%v and withdrew %d of its %d VIPs while nobody could take over",
			victim, fenced, len(before)-len(after), len(before))
	}
}

// deleted: deleting Services removes their addresses from every node and
// deletes their Leases: a fresh Service, and a third of the spread ones
// (the others stay for the API server outage).
func (s *l2Suite) deleted(t *testing.T) {
	l := s.l
	svcs := l2Create(t, l, "default", []string{"gone"})
	l2Holders(t, l, svcs)
	l2CheckServed(t, l, svcs, l2CurrentHolders(t, l, svcs), "")
	all := svcs
	if s.home != nil {
		keep := len(s.svcs) * 2 / 3
		all = append(all, s.svcs[keep:]...)
		for _, sv := range s.svcs[keep:] {
			delete(s.home, sv.Name)
		}
		s.svcs = s.svcs[:keep]
	}
	t0 := time.Now()
	l2DeleteAll(t, l, all)
	t.Logf("%d Services deleted: addresses and Leases gone in %v", len(all), time.Since(t0).Round(time.Millisecond))
	if s.home != nil {
		l2CheckNoStray(t, l, s.svcs)
	}
}

// terminating: with vip-ccm down, a deleted Service stays terminating (its
// load-balancer finalizer is vip-ccm's to remove), and the agents withdraw it
// at once anyway: the address leaves every node and the Lease is deleted
// while the object and its status are still there. vip-ccm back finishes the
// deletion.
func (s *l2Suite) terminating(t *testing.T) {
	l := s.l
	svcs := l2Create(t, l, "default", []string{"terminating"})
	sv := svcs[0]
	l2Holders(t, l, svcs)
	l2CheckServed(t, l, svcs, l2CurrentHolders(t, l, svcs), "")
	l.CCM.Kill()
	restarted := false
	defer func() {
		if !restarted {
			if err := l.CCM.Start(); err != nil {
				t.Errorf("restarting vip-ccm: %v", err)
			}
		}
	}()
	ctx := l2Ctx(t, time.Minute)
	if err := l.DeleteService(ctx, sv.NS, sv.Name); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := l.WaitBound(ctx, sv.VIP); err != nil {
		t.Fatalf("terminating %s: %v", sv, err)
	}
	if err := l.WaitLeaseGone(ctx, sv.NS, sv.Name); err != nil {
		t.Fatalf("Lease of terminating %s not deleted: %v", sv, err)
	}
	t.Logf("terminating Service withdrawn in %v", time.Since(t0).Round(time.Millisecond))
	got, err := l.Admin.CoreV1().Services(sv.NS).Get(ctx, sv.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the Service should still be terminating while vip-ccm is down: %v", err)
	}
	if got.DeletionTimestamp == nil || !slices.Contains(lab.Ingress(got), sv.VIP) {
		t.Fatalf("want a terminating Service still holding %s; deletionTimestamp=%v status=%v",
			sv.VIP, got.DeletionTimestamp, got.Status.LoadBalancer.Ingress)
	}
	restarted = true
	if err := l.CCM.Start(); err != nil {
		t.Fatalf("restarting vip-ccm: %v", err)
	}
	if err := l.ServiceGone(ctx, sv.NS, sv.Name); err != nil {
		t.Fatalf("vip-ccm back: %s not deleted: %v", sv, err)
	}
}

// l2DeleteAll deletes Services and checks that their addresses leave every
// node and their Leases are deleted.
func l2DeleteAll(t *testing.T, l *lab.Lab, svcs []l2Service) {
	t.Helper()
	ctx := l2Ctx(t, time.Minute)
	for _, sv := range svcs {
		if err := l.DeleteService(ctx, sv.NS, sv.Name); err != nil {
			t.Fatal(err)
		}
	}
	for _, sv := range svcs {
		if err := l.ServiceGone(ctx, sv.NS, sv.Name); err != nil {
			t.Fatalf("Service %s not deleted: %v", sv, err)
		}
		if err := l.WaitBound(ctx, sv.VIP); err != nil {
			t.Fatalf("deleted %s: %v", sv, err)
		}
		if err := l.WaitLeaseGone(ctx, sv.NS, sv.Name); err != nil {
			t.Fatalf("Lease of deleted %s not deleted: %v", sv, err)
		}
	}
}
