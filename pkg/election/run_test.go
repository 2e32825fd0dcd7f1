package election

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
)

// waitFor polls cond every 10ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRunLifecycle(t *testing.T) {
	client := newFakeClient()
	rec := &recorder{}
	e, err := New(Options{Client: client, NodeName: "a", Logger: testr.New(t),
		OnNodeChange: rec.onNode, OnServiceLeaseChange: rec.onLease})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	if _, err := e.Ensure(ctx, DefaultNamespace, "kubevip-web", "default/web", []string{"a"}); !errors.Is(err, ErrNotSynced) {
		t.Errorf("Ensure before sync: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	if !e.WaitForSync(ctx) {
		t.Fatal("no sync")
	}
	if err := e.Run(ctx); !errors.Is(err, ErrAlreadyRunning) {
		t.Errorf("second Run: %v", err)
	}
	waitFor(t, 2*time.Second, "self alive", func() bool { return e.Alive("a") })
	hb := stored(t, client, DefaultNamespace, "vip-node-a")
	if hb == nil || hb.Labels[LabelRole] != RoleHeartbeat || holderOf(hb) != "a" || *hb.Spec.LeaseDurationSeconds != 1 {
		t.Fatalf("heartbeat = %+v", hb)
	}
	res, err := e.Ensure(ctx, DefaultNamespace, "kubevip-web", "default/web", []string{"a"})
	if err != nil || !res.ShouldAnnounce || res.Change != Acquired {
		t.Fatalf("Ensure = %+v, %v", res, err)
	}
	if got := e.HeldLeases(); !slices.Equal(got, []LeaseRef{{DefaultNamespace, "kubevip-web"}}) {
		t.Errorf("HeldLeases = %v", got)
	}
	waitFor(t, 2*time.Second, "lease event", func() bool { return slices.Contains(rec.leaseEvents(), "kube-system/kubevip-web") })
	// The heartbeat keeps changing; the Service Lease does not.
	rv := stored(t, client, DefaultNamespace, "kubevip-web").ResourceVersion
	// Three heartbeat renewals later (however long they take here), the
	// Service Lease is still the one written.
	last, renewals := hb.ResourceVersion, 0
	waitFor(t, time.Minute, "three heartbeat renewals", func() bool {
		if l := stored(t, client, DefaultNamespace, "vip-node-a"); l != nil && l.ResourceVersion != last {
			last, renewals = l.ResourceVersion, renewals+1
		}
		return renewals >= 3
	})
	if stored(t, client, DefaultNamespace, "kubevip-web").ResourceVersion != rv {
		t.Error("service lease rewritten in steady state")
	}
	if err := e.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if stored(t, client, DefaultNamespace, "vip-node-a") != nil {
		t.Error("heartbeat left behind")
	}
	if l := stored(t, client, DefaultNamespace, "kubevip-web"); l == nil || l.Spec.HolderIdentity != nil {
		t.Errorf("lease after shutdown: %+v", l)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

func TestOptionsValidation(t *testing.T) {
	c := newFakeClient()
	for _, o := range []Options{
		{NodeName: "a"},
		{Client: c},
		{Client: c, NodeName: "a", HeartbeatPeriod: time.Second, HeartbeatTimeout: 1500 * time.Millisecond},
		{Client: c, NodeName: "a", SettleTime: -1},
	} {
		if _, err := New(o); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("New(%+v) = %v", o, err)
		}
	}
}
