package election

import (
	"slices"
	"strconv"
	"testing"
	"time"
)

// beatLink makes u observe a heartbeat of node running --liveness=link
// (its Lease carries a link address; a new version each call).
func (u *unit) beatLink(node string) {
	u.mu.Lock()
	rv := "1"
	if st := u.nodes[node]; st != nil {
		n, _ := strconv.Atoi(st.rv)
		rv = strconv.Itoa(n + 1)
	}
	u.mu.Unlock()
	l := hbLease(node, rv, "http://"+node+"/health")
	l.Annotations[AnnotationLink] = "10.0.0.2:7947"
	u.onUpsert(nil, l)
}

// TestLeaseModeSparesLinkModePeers: an agent in lease mode does not judge
// a peer running --liveness=link dead between two of its membership
// renewals (10s apart), so it takes none of that peer's addresses during a
// rolling switch; the peer goes stale only when its renewals stop for a
// membership timeout (30s). Lease-mode peers keep their 800ms timeout.
func TestLeaseModeSparesLinkModePeers(t *testing.T) {
	client := newFakeClient()
	u := newUnit(t, client, "a", nil)
	u.ready()
	u.beatLink("b")
	u.beat("c")
	u.evaluate()
	seed(t, client, svcLease(DefaultNamespace, "kubevip-1", "b", ""), u)
	u.rec.reset()

	// 9.8s: b (link mode) has not renewed, c (lease mode) has stopped too.
	u.tick(DefaultMemberPeriod-u.o.HeartbeatPeriod, true)
	if !u.Alive("b") || u.Alive("c") {
		t.Fatalf("before b's next membership renewal: alive = %v, want b and not c", u.AliveNodes())
	}
	if got := u.rec.leaseEvents(); len(got) != 0 {
		t.Errorf("lease events %v: b's Service was looked at while b is alive", got)
	}
	// b renews every 10s: alive for good.
	for range 5 {
		u.beatLink("b")
		u.tick(DefaultMemberPeriod, true)
	}
	if !u.Alive("b") {
		t.Fatal("b renewing every 10s judged dead")
	}
	// b's renewals stop: stale after the membership timeout, not before.
	u.beatLink("b")
	u.rec.reset()
	u.tick(DefaultMemberTimeout-time.Second, true)
	if !u.Alive("b") {
		t.Fatal("b stale before the membership timeout")
	}
	u.tick(2*time.Second, true)
	if u.Alive("b") || !slices.Equal(u.rec.nodeEvents(), []transition{{"b", false}}) {
		t.Fatalf("b silent for the membership timeout: alive %v, events %v", u.Alive("b"), u.rec.nodeEvents())
	}
	if got := u.rec.leaseEvents(); !slices.Equal(got, []string{"kube-system/kubevip-1"}) {
		t.Errorf("lease events = %v", got)
	}
	// b switches to lease mode: judged by the heartbeat timeout again.
	u.beat("b")
	u.evaluate()
	u.tick(2*u.o.HeartbeatTimeout, true)
	if u.Alive("b") {
		t.Error("b back in lease mode and silent: still alive")
	}
}

// TestMixedModeFlagged: the mode of each peer as seen in its heartbeat
// drives the mismatch flag both ways.
func TestMixedModeFlagged(t *testing.T) {
	client := newFakeClient()
	u := newUnit(t, client, "a", nil)
	u.ready()
	u.beatLink("b")
	u.beat("c")
	flag := func(node string) bool {
		u.mu.Lock()
		defer u.mu.Unlock()
		return u.nodes[node].mixWarned
	}
	if !flag("b") || flag("c") {
		t.Fatalf("lease-mode a: mismatch b %v (want true), c %v (want false)", flag("b"), flag("c"))
	}
	u.beat("b")
	if flag("b") {
		t.Error("b back in lease mode still flagged")
	}
}
