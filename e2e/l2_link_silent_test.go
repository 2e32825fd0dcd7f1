//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"maps"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vip-lb/vip/e2e/lab"
	"github.com/vip-lb/vip/pkg/liveness"
)

// TestL2LinkSilent: every node's firewall drops the link port (UDP 7947),
// as a default-deny host firewall does. No node hears another, so the link
// is silent for the whole cluster: no node may stop announcing for it, the
// address keeps answering, every node says so (Warning Event LinkSilent,
// vip_agent_link_silent 1), and a failed node's addresses still move, by
// the membership timing of the heartbeat Leases (slower than on the
// link). With the rules gone, link liveness resumes. Then a fresh start
// with the port blocked from the beginning converges to serving.
func TestL2LinkSilent(t *testing.T) {
	l := l2Lab(t, lab.Options{Liveness: "link", AgentArgs: []string{"--settle-time=3s"}})
	svcs := l2Create(t, l, lab.ScaleNamespace, l2Names("silent", 3))
	home := l2StableHolders(t, l, svcs, 5*time.Second, 2*time.Minute)
	owner, held := l2Pick(home)
	probe := l2Find(svcs, held[0])
	t.Logf("placement %v; probing %s held by %s", home, probe, owner)
	t.Cleanup(func() { unblockLinkPort(t, l) })

	// 1. The port is blocked on every node of a running cluster: the
	// nodes may fence for a moment (a node hearing nobody counts itself
	// cut off until the others' reports arrive), then serve again.
	p := l.StartProbe(probe.VIP, lab.ServicePort, 20*time.Millisecond, 200*time.Millisecond)
	blocked := time.Now()
	blockLinkPort(t, l)
	waitEveryNode(t, l, "vip_agent_link_silent", 1, time.Minute)
	tSilent := time.Since(blocked)
	for _, n := range l.Nodes {
		waitNodeEvent(t, l, n.Name, "LinkSilent", blocked, time.Minute)
	}
	time.Sleep(10 * time.Second) // observed while silent: the probe runs on
	rs := p.Stop()
	outage, fails, ok := lab.Outage(rs, owner)
	steady := failedRunAfter(rs, blocked.Add(tSilent+3*time.Second))
	t.Logf("port blocked on every node: link silent for the cluster after %v; client outage %v (%d failed probes of %d, ok=%v); longest failed run afterwards %d",
		tSilent.Round(time.Millisecond), outage.Round(time.Millisecond), fails, len(rs), ok, steady)
	if steady >= 3 {
		t.Errorf("%d consecutive probes of %s failed while the link was silent for the cluster", steady, probe)
	}
	if last := rs[len(rs)-1]; last.Err != nil {
		t.Errorf("%s does not answer with the link silent: %v", probe, last.Err)
	}
	for _, n := range l.Nodes {
		if v := linkMetric(t, l, n.Name, "vip_agent_fenced", ""); v != 0 {
			t.Errorf("%s fenced with the link silent for every node", n.Name)
		}
	}
	if msgs := nodeEvents(t, l, l.Nodes[0].Name, "LinkSilent", blocked); len(msgs) > 0 {
		t.Logf("Warning on %s: %s", l.Nodes[0].Name, msgs[0])
		for _, want := range []string{"UDP 7947", "firewall", "different keys"} {
			if !strings.Contains(msgs[0], want) {
				t.Errorf("Warning %q does not name %q", msgs[0], want)
			}
		}
	}

	// 2. The owner's port dies while the link is silent: its addresses
	// move by the membership timing (its renewals stop), not by the link.
	holders := l2CurrentHolders(t, l, svcs)
	owner, held = l2Pick(holders)
	probe = l2Find(svcs, held[0])
	p = l.StartProbe(probe.VIP, lab.ServicePort, 50*time.Millisecond, 200*time.Millisecond)
	cut := time.Now()
	if err := l.CutPort(owner); err != nil {
		p.Stop()
		t.Fatal(err)
	}
	ctx := l2Ctx(t, 2*time.Minute)
	newOwner, err := l.WaitHolder(ctx, lab.ScaleNamespace, probe.Name, func(h string) bool { return h != "" && h != owner })
	if err != nil {
		p.Stop()
		_ = l.RestorePort(owner)
		t.Fatalf("%s's Services did not move with the link silent: %v\n%s", owner, err, l.Logs(30))
	}
	tMoved := time.Since(cut)
	if _, err := l.WaitServedBy(ctx, probe.VIP, lab.ServicePort, func(n string) bool { return n == newOwner }); err != nil {
		t.Errorf("%s not served by %s: %v", probe, newOwner, err)
	}
	rs = p.Stop()
	gap, last := failedSpan(rs, cut)
	t.Logf("owner %s's port cut with the link silent: Lease moved to %s after %v (membership timing: renewal %v, timeout %v); client: %d of %d probes failed, longest outage %v, last failure %v after the cut",
		owner, newOwner, tMoved.Round(time.Millisecond), 10*time.Second, 30*time.Second, lab.Failures(rs), len(rs), gap.Round(time.Millisecond), last.Round(time.Millisecond))
	if err := l.RestorePort(owner); err != nil {
		t.Fatal(err)
	}
	silentWaitHome(t, l, svcs, home)

	// 3. The rules go: nodes hear each other, link liveness resumes.
	unblocked := time.Now()
	unblockLinkPort(t, l)
	waitEveryNode(t, l, "vip_agent_link_silent", 0, time.Minute)
	t.Logf("rules removed: link liveness resumed on every node after %v", time.Since(unblocked).Round(time.Millisecond))
	for _, n := range l.Nodes {
		waitNodeEvent(t, l, n.Name, "LinkHeard", unblocked, time.Minute)
		if v := linkMetric(t, l, n.Name, "vip_agent_fenced", ""); v != 0 {
			t.Errorf("%s fenced after the link resumed", n.Name)
		}
	}
	l2WaitHome(t, l, svcs, home)
	// Back on the link: a cut port moves addresses within the link's
	// failover time again.
	holders = l2CurrentHolders(t, l, svcs)
	owner, held = l2Pick(holders)
	cut = time.Now()
	if err := l.CutPort(owner); err != nil {
		t.Fatal(err)
	}
	if _, err := l.WaitHolder(l2Ctx(t, time.Minute), lab.ScaleNamespace, held[0], func(h string) bool { return h != "" && h != owner }); err != nil {
		_ = l.RestorePort(owner)
		t.Fatal(err)
	}
	tLink := time.Since(cut)
	t.Logf("link liveness again: %s's port cut, its Service moved after %v", owner, tLink.Round(time.Millisecond))
	if tLink > 5*time.Second {
		t.Errorf("after the link resumed a cut port took %v to move its Services (membership timing, not the link's)", tLink)
	}
	if err := l.RestorePort(owner); err != nil {
		t.Fatal(err)
	}
	l2WaitHome(t, l, svcs, home)

	// 4. A fresh start with the port blocked from the beginning: every
	// agent stops (graceful: their heartbeat Leases are deleted), the rules
	// go in, the agents start together. They may fence before the silence
	// reports land, then must serve.
	for _, n := range l.Nodes {
		if err := l.StopAgent(n.Name, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	}
	blockLinkPort(t, l)
	p = l.StartProbe(probe.VIP, lab.ServicePort, 50*time.Millisecond, 200*time.Millisecond)
	started := time.Now()
	for _, n := range l.Nodes {
		if err := n.Agent.Start(); err != nil {
			p.Stop()
			t.Fatal(err)
		}
	}
	for _, n := range l.Nodes {
		if err := l.WaitAgentReady(l2Ctx(t, time.Minute), n.Name); err != nil {
			p.Stop()
			t.Fatal(err)
		}
	}
	waitEveryNode(t, l, "vip_agent_link_silent", 1, time.Minute)
	tStartSilent := time.Since(started)
	if _, err := l.WaitServedBy(l2Ctx(t, time.Minute), probe.VIP, lab.ServicePort, func(n string) bool { return n != "" }); err != nil {
		p.Stop()
		t.Fatalf("%s never served after a start with the port blocked: %v\n%s", probe, err, l.Logs(40))
	}
	time.Sleep(5 * time.Second)
	rs = p.Stop()
	first, fenced := firstServed(rs), 0.0
	gap, last = failedSpan(rs, first)
	for _, n := range l.Nodes {
		fenced += linkMetric(t, l, n.Name, "vip_agent_fences_total", "")
		if v := linkMetric(t, l, n.Name, "vip_agent_fenced", ""); v != 0 {
			t.Errorf("%s still fenced after a start with the port blocked", n.Name)
		}
	}
	t.Logf("start with the port blocked: link silent for the cluster after %v, first answer %v after the agents started, %d fences meanwhile; after the first answer the longest outage was %v, the last failed probe %v after the start; last answer ok=%v",
		tStartSilent.Round(time.Millisecond), first.Sub(started).Round(time.Millisecond), int(fenced), gap.Round(time.Millisecond),
		(last + first.Sub(started)).Round(time.Millisecond), rs[len(rs)-1].Err == nil)
	if steady := failedRunAfter(rs, first.Add(3*time.Second)); steady >= 3 {
		t.Errorf("%d consecutive probes failed after the first answer", steady)
	}
	unblockLinkPort(t, l)
	waitEveryNode(t, l, "vip_agent_link_silent", 0, time.Minute)
}

// silentWaitHome waits until every Service is held by its home node again
// and nothing is stray. (l2WaitHome first waits for fresh heartbeat ages,
// which a silent link cannot give: ages are then membership ages, up to a
// renewal period.)
func silentWaitHome(t *testing.T, l *lab.Lab, svcs []l2Service, home map[string]string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		cur := l2CurrentHolders(t, l, svcs)
		if maps.Equal(cur, home) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Services did not return to their preferred nodes: holders %v, want %v\n%s", cur, home, l.Logs(30))
		}
		time.Sleep(200 * time.Millisecond)
	}
	l2CheckNoStray(t, l, svcs)
}

// linkRules drops the link port both ways in a node's namespace.
const linkRules = `table inet vip-silent {
	chain in { type filter hook input priority 0; policy accept; udp dport %[1]d drop; }
	chain out { type filter hook output priority 0; policy accept; udp dport %[1]d drop; }
}
`

// blockLinkPort installs linkRules in every node's namespace.
func blockLinkPort(t *testing.T, l *lab.Lab) {
	t.Helper()
	for _, n := range l.Nodes {
		if _, err := runIn(n.NS, fmt.Sprintf(linkRules, liveness.DefaultPort), "nft", "-f", "-"); err != nil {
			t.Fatal(err)
		}
	}
}

// unblockLinkPort removes linkRules wherever they are.
func unblockLinkPort(t *testing.T, l *lab.Lab) {
	t.Helper()
	for _, n := range l.Nodes {
		if out, err := runIn(n.NS, "", "nft", "list", "tables"); err == nil && strings.Contains(out, "vip-silent") {
			if _, err := runIn(n.NS, "", "nft", "delete", "table", "inet", "vip-silent"); err != nil {
				t.Error(err)
			}
		}
	}
}

// waitEveryNode waits until a gauge has value want on every node.
func waitEveryNode(t *testing.T, l *lab.Lab, metric string, want float64, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for _, n := range l.Nodes {
		for linkMetric(t, l, n.Name, metric, "") != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s never %v\n%s", n.Name, metric, want, l.Logs(30))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// nodeEvents lists the messages of a Node's Events with reason, last seen
// after since.
func nodeEvents(t *testing.T, l *lab.Lab, node, reason string, since time.Time) []string {
	t.Helper()
	list, err := l.Admin.CoreV1().Events(metav1.NamespaceAll).List(l2Ctx(t, 30*time.Second), metav1.ListOptions{
		FieldSelector: "involvedObject.kind=Node,involvedObject.name=" + node + ",reason=" + reason})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range list.Items {
		if e.LastTimestamp.Time.After(since.Add(-time.Second)) || e.EventTime.Time.After(since.Add(-time.Second)) {
			out = append(out, e.Message)
		}
	}
	return out
}

// waitNodeEvent waits for an Event on a Node.
func waitNodeEvent(t *testing.T, l *lab.Lab, node, reason string, since time.Time, d time.Duration) {
	t.Helper()
	ctx := l2Ctx(t, d)
	err := lab.Poll(ctx, 200*time.Millisecond, func() (bool, error) {
		return len(nodeEvents(t, l, node, reason, since)) > 0, nil
	})
	if err != nil {
		t.Fatalf("no %s Event on Node %s: %v", reason, node, err)
	}
}

// failedRunAfter is the longest run of failed probes started after from.
func failedRunAfter(rs []lab.ProbeResult, from time.Time) int {
	run, longest := 0, 0
	for _, r := range rs {
		if r.At.Before(from) {
			continue
		}
		if r.Err != nil {
			run++
			longest = max(longest, run)
		} else {
			run = 0
		}
	}
	return longest
}

// failedSpan is the longest run of failed probes started after from (from
// its first failure to the next answer, or to its last failure), and when
// the last failed probe started, both measured from from.
func failedSpan(rs []lab.ProbeResult, from time.Time) (longest, last time.Duration) {
	var runStart time.Time
	defer func() {
		if !runStart.IsZero() {
			longest = max(longest, last-runStart.Sub(from))
		}
	}()
	for _, r := range rs {
		if r.At.Before(from) {
			continue
		}
		if r.Err != nil {
			if runStart.IsZero() {
				runStart = r.At
			}
			last = r.At.Sub(from)
			continue
		}
		if !runStart.IsZero() {
			longest = max(longest, r.At.Sub(runStart))
			runStart = time.Time{}
		}
	}
	return longest, last
}

// firstServed is the start of the first answered probe (zero: none).
func firstServed(rs []lab.ProbeResult) time.Time {
	for _, r := range rs {
		if r.Err == nil {
			return r.At
		}
	}
	return time.Time{}
}

// runIn runs a command in a network namespace with stdin.
func runIn(ns, stdin string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s in %s: %w: %s", name, strings.Join(args, " "), ns, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
