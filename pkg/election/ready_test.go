package election

import (
	"context"
	"net/netip"
	"slices"
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
