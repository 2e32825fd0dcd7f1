package election

import (
	"slices"
	"testing"
	"time"
)

func TestLivenessOnObserverClock(t *testing.T) {
	client := newFakeClient()
	u := newUnit(t, client, "a", nil)
	u.ready()
	// b's heartbeat never changes: fresh from first sight anyway.
	u.beat("b")
	u.beat("c")
	u.evaluate()
	if !u.Alive("b") || !u.Alive("c") || !u.Alive("a") {
		t.Fatalf("alive nodes = %v", u.AliveNodes())
	}
	seed(t, client, svcLease(DefaultNamespace, "kubevip-1", "b", ""), u)
	seed(t, client, svcLease(DefaultNamespace, "kubevip-2", "c", ""), u)
	u.rec.reset()

	// c renews, b does not: b goes stale after the timeout, not before.
	u.tick(u.o.HeartbeatTimeout-u.o.HeartbeatPeriod, true, "c")
	if !u.Alive("b") {
		t.Fatal("b stale before the timeout")
	}
	u.tick(u.o.HeartbeatPeriod, true, "c")
	if u.Alive("b") || !u.Alive("c") {
		t.Fatalf("after the timeout: alive = %v", u.AliveNodes())
	}
	if got := u.rec.nodeEvents(); !slices.Equal(got, []transition{{"b", false}}) {
		t.Errorf("node events = %v", got)
	}
	// The agent learns which Services to look at.
	if got := u.rec.leaseEvents(); !slices.Equal(got, []string{"kube-system/kubevip-1"}) {
		t.Errorf("lease events = %v", got)
	}
	if got := u.AliveNodes(); !slices.Equal(got, []string{"a", "c"}) {
		t.Errorf("AliveNodes = %v", got)
	}

	// b renews again: alive at once, and it settles from now.
	u.rec.reset()
	u.beat("b")
	u.evaluate()
	if !u.Alive("b") || !slices.Equal(u.rec.nodeEvents(), []transition{{"b", true}}) {
		t.Fatalf("b back: alive %v, events %v", u.Alive("b"), u.rec.nodeEvents())
	}
	if v := u.snapshot([]string{"b"}); !v.since["b"].Equal(u.clk.Now()) {
		t.Errorf("b alive since %v, want now", v.since["b"])
	}

	// A deleted heartbeat is stale at once.
	u.rec.reset()
	u.onDelete(hbLease("c", "999", ""))
	if u.Alive("c") || !slices.Equal(u.rec.nodeEvents(), []transition{{"c", false}}) {
		t.Fatalf("c deleted: alive %v, events %v", u.Alive("c"), u.rec.nodeEvents())
	}
	if got := u.rec.leaseEvents(); !slices.Equal(got, []string{"kube-system/kubevip-2"}) {
		t.Errorf("lease events = %v", got)
	}
}

func TestNobodyIsJudgedWithoutALiveWatch(t *testing.T) {
	client := newFakeClient()
	u := newUnit(t, client, "a", nil)
	u.ready()
	u.beat("b")
	u.beat("c")
	u.evaluate()
	// The API server is down: no heartbeat changes arrive, not even ours.
	u.tick(30*time.Second, false)
	if !u.Alive("b") || !u.Alive("c") || !u.Alive("a") {
		t.Fatalf("nodes judged dead while our own watch was silent: alive = %v", u.AliveNodes())
	}
	// It is back: our heartbeat and c's arrive (b is really dead). Nobody
	// is judged on the outage; b goes stale a full timeout later.
	u.beat("a")
	u.beat("c")
	u.evaluate()
	if !u.Alive("b") {
		t.Fatal("b judged on the outage")
	}
	u.tick(u.o.HeartbeatTimeout-u.o.HeartbeatPeriod, true, "c")
	if !u.Alive("b") {
		t.Fatal("b stale before a timeout after the watch came back")
	}
	u.tick(u.o.HeartbeatPeriod, true, "c")
	if u.Alive("b") || !u.Alive("c") {
		t.Fatalf("alive = %v", u.AliveNodes())
	}
}

func TestSelfLiveness(t *testing.T) {
	client := newFakeClient()
	u := newUnit(t, client, "a", nil)
	if u.Alive("a") {
		t.Fatal("alive before the first renewal")
	}
	u.beat("a") // an old heartbeat from before a restart
	u.evaluate()
	if u.Alive("a") {
		t.Fatal("alive before renewing")
	}
	u.ready()
	u.evaluate()
	if !u.Alive("a") || !slices.Equal(u.rec.nodeEvents(), []transition{{"a", true}}) {
		t.Fatalf("ready: alive %v, events %v", u.Alive("a"), u.rec.nodeEvents())
	}
	u.mu.Lock()
	u.hb.fenced = true
	u.mu.Unlock()
	u.evaluate()
	if u.Alive("a") || slices.Contains(u.AliveNodes(), "a") {
		t.Fatal("a fenced node is alive")
	}
	if got := u.rec.nodeEvents(); !slices.Equal(got, []transition{{"a", true}, {"a", false}}) {
		t.Errorf("events = %v", got)
	}
}
