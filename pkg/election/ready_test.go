package election

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/vip-lb/vip/pkg/lbsvc"
)

// beatReady makes u observe a heartbeat of node saying ready.
func (u *unit) beatReady(node string, ready bool) {
	u.mu.Lock()
	rv := 1
	if st := u.nodes[node]; st != nil {
		rv = len(st.rv) + int(st.changes) + 1
	}
	u.mu.Unlock()
	l := hbLease(node, "r"+time.Duration(rv).String(), "")
	if !ready {
		l.Annotations[lbsvc.AnnotationNodeReady] = "false"
	}
	u.onUpsert(nil, l)
}

// TestNotReadyPeerIsNoCandidate: a peer whose fresh heartbeat says it has
// not synced is not alive for elections, holds nothing it is preferred for,
// and becomes a candidate on its first ready heartbeat.
func TestNotReadyPeerIsNoCandidate(t *testing.T) {
	client := newFakeClient()
	u := newUnit(t, client, "a", nil)
	u.ready()
	u.beatReady("b", false)
	u.evaluate()
	if u.Alive("b") || !slices.Equal(u.AliveNodes(), []string{"a"}) {
		t.Fatalf("not-ready b: alive nodes %v", u.AliveNodes())
	}
	// Whatever b's hash says, a decides without it.
	res, err := u.Ensure(t.Context(), DefaultNamespace, lbsvc.AddressLeaseName(mustAddr("10.0.0.5")), "10.0.0.5", []string{"a", "b"})
	if err != nil || !res.ShouldAnnounce || res.Holder != "a" {
		t.Fatalf("Ensure with b not ready = %+v, %v; want a to announce", res, err)
	}
	u.rec.reset()
	u.beatReady("b", true)
	u.evaluate()
	if !u.Alive("b") || !slices.Equal(u.rec.nodeEvents(), []transition{{"b", true}}) {
		t.Fatalf("b ready: alive %v, events %v", u.Alive("b"), u.rec.nodeEvents())
	}
	// b ready again then not: it stops being a candidate at once.
	u.rec.reset()
	u.beatReady("b", false)
	u.evaluate()
	if u.Alive("b") || !slices.Equal(u.rec.nodeEvents(), []transition{{"b", false}}) {
		t.Fatalf("b not ready again: alive %v, events %v", u.Alive("b"), u.rec.nodeEvents())
	}
}

// TestSelfNotReady: this node is no candidate of its own while Ready says
// no, and its heartbeat says so; Publish puts values on the heartbeat.
func TestSelfNotReady(t *testing.T) {
	client := newFakeClient()
	var ready atomic.Bool
	e, err := New(Options{Client: client, NodeName: "a", Logger: testr.New(t), Ready: ready.Load})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	if !e.WaitForSync(ctx) {
		t.Fatal("no sync")
	}
	waitFor(t, 5*time.Second, "heartbeat written", func() bool {
		hb := stored(t, client, DefaultNamespace, HeartbeatPrefix+"a")
		return hb != nil && hb.Annotations[lbsvc.AnnotationNodeReady] == "false"
	})
	if slices.Contains(e.AliveNodes(), "a") {
		t.Fatalf("not-ready node lists itself: %v", e.AliveNodes())
	}
	ready.Store(true)
	e.Publish(map[string]string{lbsvc.AnnotationNodeAddresses: "10.0.0.11", lbsvc.AnnotationNodeGateways: "10.0.0.1"})
	waitFor(t, 5*time.Second, "ready and published on the heartbeat", func() bool {
		hb := stored(t, client, DefaultNamespace, HeartbeatPrefix+"a")
		return hb != nil && hb.Annotations[lbsvc.AnnotationNodeReady] == "true" &&
			hb.Annotations[lbsvc.AnnotationNodeAddresses] == "10.0.0.11" && hb.Annotations[lbsvc.AnnotationNodeGateways] == "10.0.0.1"
	})
	waitFor(t, 5*time.Second, "self candidate", func() bool { return slices.Contains(e.AliveNodes(), "a") })
	cancel()
	<-done
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// TestSelfReadyOnlyOncePublished: Ready() turning true is not enough for
// this node to take an address; its own heartbeat seen through the watch
// must say ready, since until then a peer still reads "not ready" and would
// take the Lease back, both nodes announcing until the watches catch up.
func TestSelfReadyOnlyOncePublished(t *testing.T) {
	client := newFakeClient()
	u := newUnit(t, client, "a", nil) // Ready() is always true here
	u.ready()
	u.beatReady("a", false) // the heartbeat peers see still says not ready
	u.evaluate()
	if u.Alive("a") {
		t.Fatal("a counts itself alive while its published heartbeat says not ready")
	}
	addr := mustAddr("10.0.0.7")
	res, err := u.Ensure(t.Context(), DefaultNamespace, lbsvc.AddressLeaseName(addr), addr.String(), []string{"a"})
	if err != nil || res.ShouldAnnounce || res.Holder != "" {
		t.Fatalf("Ensure before the ready heartbeat = %+v, %v; want nothing taken", res, err)
	}
	if l := stored(t, client, DefaultNamespace, lbsvc.AddressLeaseName(addr)); l != nil {
		t.Fatalf("Lease written before the ready heartbeat: %+v", l.Spec)
	}
	u.beatReady("a", true)
	u.evaluate()
	res, err = u.Ensure(t.Context(), DefaultNamespace, lbsvc.AddressLeaseName(addr), addr.String(), []string{"a"})
	if err != nil || !res.ShouldAnnounce || res.Holder != "a" {
		t.Fatalf("Ensure after the ready heartbeat = %+v, %v; want a to announce", res, err)
	}
}

// TestRestartedHolderKeepsItsLease: an agent restarted on the node holding
// a Lease is no candidate until its ready heartbeat comes back; meanwhile
// it keeps the Lease without announcing (no release to nobody), is told
// when it becomes a candidate, and then announces again.
func TestRestartedHolderKeepsItsLease(t *testing.T) {
	client := newFakeClient()
	u := newUnit(t, client, "a", nil)
	addr := mustAddr("10.0.0.9")
	name := lbsvc.AddressLeaseName(addr)
	seed(t, client, svcLease(DefaultNamespace, name, "a", ""), u)
	u.ready()
	u.beatReady("a", false) // the new process's first heartbeat: not ready yet
	u.evaluate()
	u.rec.reset()
	// The agent's candidates come from AliveNodes, which lacks a for now.
	res, err := u.Ensure(t.Context(), DefaultNamespace, name, addr.String(), u.AliveNodes())
	if err != nil || res.ShouldAnnounce || res.Release || res.Holder != "a" {
		t.Fatalf("Ensure before the ready heartbeat = %+v, %v; want the Lease kept, not announced", res, err)
	}
	if h := holderOf(stored(t, client, DefaultNamespace, name)); h != "a" {
		t.Fatalf("holder = %q, want a", h)
	}
	u.beatReady("a", true)
	u.evaluate()
	if !slices.Equal(u.rec.nodeEvents(), []transition{{"a", true}}) {
		t.Fatalf("events after the ready heartbeat = %v, want a alive", u.rec.nodeEvents())
	}
	res, err = u.Ensure(t.Context(), DefaultNamespace, name, addr.String(), u.AliveNodes())
	if err != nil || !res.ShouldAnnounce || res.Holder != "a" {
		t.Fatalf("Ensure after the ready heartbeat = %+v, %v; want a to announce", res, err)
	}
}

// TestAliveHolderHandsOffItself: a node preferred for a Lease whose alive
// holder is no longer a candidate waits for the holder to hand it off, and
// takes it only when the holder has not done so within HeartbeatTimeout.
func TestAliveHolderHandsOffItself(t *testing.T) {
	client := newFakeClient()
	u := newUnit(t, client, "a", nil)
	u.ready()
	u.beat("b")
	u.evaluate()
	key := keyPreferring(t, "a", "a")
	seed(t, client, svcLease(DefaultNamespace, "kubevip-x", "b", ""), u)
	res, err := u.Ensure(t.Context(), DefaultNamespace, "kubevip-x", key, []string{"a"})
	if err != nil || res.ShouldAnnounce || res.Holder != "b" || res.RequeueAfter != u.o.HeartbeatTimeout {
		t.Fatalf("first look = %+v, %v; want to wait HeartbeatTimeout for b", res, err)
	}
	u.tick(u.o.HeartbeatTimeout/2, true, "b")
	res, err = u.Ensure(t.Context(), DefaultNamespace, "kubevip-x", key, []string{"a"})
	if err != nil || res.ShouldAnnounce || res.RequeueAfter <= 0 || res.RequeueAfter >= u.o.HeartbeatTimeout {
		t.Fatalf("half-way = %+v, %v; want to keep waiting", res, err)
	}
	u.tick(u.o.HeartbeatTimeout/2, true, "b")
	res, err = u.Ensure(t.Context(), DefaultNamespace, "kubevip-x", key, []string{"a"})
	if err != nil || !res.ShouldAnnounce || res.Holder != "a" || res.Change != Acquired ||
		!strings.Contains(res.Reason, "did not hand it off") {
		t.Fatalf("after HeartbeatTimeout = %+v, %v; want a to take the Lease", res, err)
	}
	// A holder that becomes a candidate again restarts the wait.
	seed(t, client, svcLease(DefaultNamespace, "kubevip-y", "b", ""), u)
	if res, _ = u.Ensure(t.Context(), DefaultNamespace, "kubevip-y", key, []string{"a"}); res.RequeueAfter == 0 {
		t.Fatalf("y first look = %+v", res)
	}
	u.tick(u.o.HeartbeatTimeout, true, "b")
	if res, _ = u.Ensure(t.Context(), DefaultNamespace, "kubevip-y", key, []string{"a", "b"}); res.Holder != "b" || res.ShouldAnnounce {
		t.Fatalf("y with b a candidate = %+v", res)
	}
	if res, _ = u.Ensure(t.Context(), DefaultNamespace, "kubevip-y", key, []string{"a"}); res.RequeueAfter != u.o.HeartbeatTimeout {
		t.Fatalf("y after b left the candidates again = %+v; want a fresh wait", res)
	}
}
