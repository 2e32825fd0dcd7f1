package election

import (
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vip-lb/vip/pkg/lbsvc"
	"github.com/vip-lb/vip/pkg/testbed"
)

// TestNotReadyNodeWinsNothing: against the real API server, a node whose
// agent has not synced (Ready false: e.g. a missing RBAC rule) renews its
// heartbeat but says vip.io/ready "false", and the others give it nothing,
// even the Services it is preferred for and although the caller lists it
// as a candidate.
func TestNotReadyNodeWinsNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real API server")
	}
	env := testbed.Start(t)
	var mu sync.Mutex
	ready := map[string]bool{"node-1": true, "node-2": false, "node-3": true}
	c := newCluster(t, env, "notready", 24, func(o *Options) {
		node := o.NodeName
		o.Ready = func() bool {
			mu.Lock()
			defer mu.Unlock()
			return ready[node]
		}
	})
	nodes := []string{"node-1", "node-2", "node-3"}
	c.start("node-1", "node-3")
	c.startNode("node-2") // renews its heartbeat, never alive for the others
	waitFor(t, 20*time.Second, "node-2's heartbeat", func() bool {
		hb, err := env.AdminClient().CoordinationV1().Leases(c.hbNS).Get(t.Context(), HeartbeatPrefix+"node-2", metav1.GetOptions{})
		return err == nil && hb.Annotations[lbsvc.AnnotationNodeReady] == "false"
	})
	c.enqueueAll()
	owners := c.waitOwned(20 * time.Second)
	preferredByTwo := 0
	for _, s := range c.services {
		if Preferred(c.key(s), nodes) == "node-2" {
			preferredByTwo++
		}
		if owners[s] == "node-2" {
			t.Errorf("%s owned by the node that is not ready", s)
		}
		if want := Preferred(c.key(s), []string{"node-1", "node-3"}); owners[s] != want {
			t.Errorf("%s owned by %s, want %s (preferred among the ready nodes)", s, owners[s], want)
		}
	}
	if preferredByTwo == 0 {
		t.Fatal("no Service prefers node-2: the scenario proves nothing")
	}
	hb, err := env.AdminClient().CoordinationV1().Leases(c.hbNS).Get(t.Context(), HeartbeatPrefix+"node-2", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if hb.Annotations[lbsvc.AnnotationNodeReady] != "false" {
		t.Fatalf("node-2's heartbeat says ready %q", hb.Annotations[lbsvc.AnnotationNodeReady])
	}
	t.Logf("%d of %d Services prefer node-2, which is not ready: all held by node-1 and node-3", preferredByTwo, len(c.services))
}
