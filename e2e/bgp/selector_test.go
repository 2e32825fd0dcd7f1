//go:build e2e

package bgp

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

const rackLabel = "lab.vip.test/rack"

// label sets (or, with nil, removes) labels of a node.
func (l *bgpLab) label(t testing.TB, node string, labels map[string]*string) {
	t.Helper()
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": labels}})
	if _, err := l.admin.CoreV1().Nodes().Patch(context.Background(), node, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatalf("labelling %s: %v", node, err)
	}
}

// TestPeerNodeSelectors: FRR is a peer of every agent, limited by a peer
// node selector to the nodes labelled rack=a; BIRD has no selector. FRR
// gets sessions (and ECMP next hops) only from the labelled nodes and
// follows label changes while the agents run; BIRD keeps every node all
// along.
func TestPeerNodeSelectors(t *testing.T) {
	l := lab
	f := l.startFRR(t)
	defer f.stop()
	defer l.ensureAllUp(t)

	// Restart the agents with FRR as a selected peer.
	saved := map[string][]string{}
	for _, n := range l.nodes {
		saved[n.name] = slices.Clone(n.agent.args)
	}
	defer func() {
		for _, n := range l.nodes {
			n.agent.args = saved[n.name]
			l.stopAgent(n.name, syscall.SIGTERM)
		}
		l.label(t, "node1", map[string]*string{rackLabel: nil})
		l.label(t, "node2", map[string]*string{rackLabel: nil})
	}()
	l.label(t, "node1", map[string]*string{rackLabel: ptr("a")})
	for _, n := range l.nodes {
		args := slices.Clone(saved[n.name])
		for i := range args {
			if args[i] == "--bgppeers" {
				args[i+1] += fmt.Sprintf(",%s:%d", f.ip, routerAS)
			}
		}
		n.agent.args = append(args, "--bgp-peer-node-selector", fmt.Sprintf("%s=%s=a", f.ip, rackLabel))
		l.stopAgent(n.name, syscall.SIGTERM)
		if err := n.agent.start(); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.waitSessions(context.Background(), 40*time.Second); err != nil {
		t.Fatal(err)
	}
	frrUp := func(names ...string) func() bool {
		return func() bool {
			up := f.established()
			for _, n := range l.nodes {
				if up[n.ip4.String()] != slices.Contains(names, n.name) {
					return false
				}
			}
			return true
		}
	}
	l.eventually(t, "FRR session with node1 only", 30*time.Second, frrUp("node1"))

	l.createService(t, "default", "selected")
	defer l.deleteService(t, "default", "selected")
	vip := l.waitAddress(t, "default", "selected")
	hops := func() []netip.Addr { return nextHopsIn(f.nl, vip) }
	l.eventually(t, fmt.Sprintf("FRR's route %s via node1 (has %v)", vip, hops()), 20*time.Second, func() bool {
		return slices.Equal(hops(), l.nodeIPs(false, "node1"))
	})
	l.waitNextHops(t, vip, 10*time.Second, l.nodeIPs(false)...)

	// Labels change while the agents run: node2 joins rack a, node1 leaves.
	l.label(t, "node2", map[string]*string{rackLabel: ptr("a")})
	l.eventually(t, "FRR sessions with node1 and node2", 30*time.Second, frrUp("node1", "node2"))
	l.eventually(t, fmt.Sprintf("FRR's route via node1 and node2 (has %v)", hops()), 20*time.Second, func() bool {
		return slices.Equal(hops(), l.nodeIPs(false, "node1", "node2"))
	})
	l.label(t, "node1", map[string]*string{rackLabel: ptr("b")})
	l.eventually(t, "FRR session with node2 only", 30*time.Second, frrUp("node2"))
	l.eventually(t, fmt.Sprintf("FRR's route via node2 (has %v)", hops()), 20*time.Second, func() bool {
		return slices.Equal(hops(), l.nodeIPs(false, "node2"))
	})
	// BIRD, without a selector, never lost a node.
	if got := l.nextHops(vip); !slices.Equal(got, l.nodeIPs(false)) {
		t.Errorf("BIRD's route changed to %v while FRR's selection changed", got)
	}
	if up, _ := l.established(); !up["node1"] || !up["node3"] {
		t.Errorf("BIRD sessions after the label changes: %v", up)
	}
}
