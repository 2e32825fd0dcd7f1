package election

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/vip-lb/vip/pkg/lbsvc"
	"github.com/vip-lb/vip/pkg/testbed"
)

// TestFactsLease: a BGP-mode agent's node Lease, against the real API
// server. It takes over a leftover layer-2 heartbeat of the same name (role
// and health URL go, stale facts are replaced), is written again only when
// a fact changes (ready, a gateway gone) and renewed every Renew: at rest,
// 29 one-second rounds write nothing, the 30th renews.
func TestFactsLease(t *testing.T) {
	env := testbed.Start(t)
	admin := env.AdminClient()
	ctx := t.Context()
	const ns, node = "facts", "n1"
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	old := &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: HeartbeatPrefix + node, Namespace: ns,
		Labels:      map[string]string{LabelManagedBy: ManagedByValue, LabelRole: RoleHeartbeat},
		Annotations: map[string]string{AnnotationHealth: "http://10.0.0.1:2112/vip/election", lbsvc.AnnotationNodeAddresses: "10.0.0.99"}}}
	if _, err := admin.CoordinationV1().Leases(ns).Create(ctx, old, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	clk := clocktesting.NewFakeClock(time.Now())
	var ready atomic.Bool
	f := NewFacts(FactsOptions{Client: admin, Namespace: ns, NodeName: node, Ready: ready.Load, Clock: clk, Logger: testr.New(t)})
	f.Publish(map[string]string{lbsvc.AnnotationNodeAddresses: "10.0.0.1,fd00::1", lbsvc.AnnotationNodeGateways: "10.0.0.254"})
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); f.Run(rctx) }()
	t.Cleanup(func() { cancel(); <-done })

	get := func() *coordv1.Lease {
		t.Helper()
		l, err := admin.CoordinationV1().Leases(ns).Get(ctx, HeartbeatPrefix+node, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	// step advances the clock by d and waits for the round it triggers.
	step := func(d time.Duration) {
		t.Helper()
		r := f.rounds.Load()
		clk.Step(d)
		waitUntil(t, "a facts round", func() bool { return f.rounds.Load() > r })
	}
	waitUntil(t, "the first write", func() bool { return f.writes.Load() == 1 })
	l := get()
	want := map[string]string{lbsvc.AnnotationNodeAddresses: "10.0.0.1,fd00::1", lbsvc.AnnotationNodeGateways: "10.0.0.254",
		lbsvc.AnnotationNodeReady: "false"}
	for k, v := range want {
		if l.Annotations[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, l.Annotations[k], v)
		}
	}
	if _, ok := l.Annotations[AnnotationHealth]; ok || l.Labels[LabelRole] != RoleFacts || l.Labels[LabelManagedBy] != ManagedByValue {
		t.Errorf("taken-over heartbeat: labels %v, annotations %v", l.Labels, l.Annotations)
	}
	if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != node || l.Spec.RenewTime == nil {
		t.Errorf("holder %v renew %v", l.Spec.HolderIdentity, l.Spec.RenewTime)
	}

	// A change is written at the next round.
	ready.Store(true)
	step(time.Second)
	if f.writes.Load() != 2 || get().Annotations[lbsvc.AnnotationNodeReady] != "true" {
		t.Fatalf("ready not written: %d writes, %v", f.writes.Load(), get().Annotations)
	}
	// At rest: nothing until Renew has passed since the last write.
	rv := get().ResourceVersion
	for range 29 {
		step(time.Second)
	}
	if f.writes.Load() != 2 || get().ResourceVersion != rv {
		t.Fatalf("at rest: %d writes after 29 s, want none since the last", f.writes.Load()-2)
	}
	step(time.Second)
	if f.writes.Load() != 3 || get().ResourceVersion == rv {
		t.Fatalf("no renewal after %v: %d writes", DefaultFactsRenew, f.writes.Load())
	}
	// A fact that goes away is removed.
	f.Publish(map[string]string{lbsvc.AnnotationNodeGateways: ""})
	step(time.Second)
	if a := get().Annotations; f.writes.Load() != 4 || a[lbsvc.AnnotationNodeGateways] != "" || a[lbsvc.AnnotationNodeAddresses] == "" {
		t.Fatalf("gateway removal: %d writes, %v", f.writes.Load(), a)
	}
}

func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
