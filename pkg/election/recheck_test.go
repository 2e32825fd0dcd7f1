package election

import (
	"slices"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"
)

// TestRecheckAfterStall: when renewals work again after the heartbeat
// stood still long enough for peers to take over, the node re-reads its
// Leases in one LIST, puts the ones another node took into its cache and
// reports them at once, without its watch. A short hiccup, and renewals at
// rest, read nothing.
func TestRecheckAfterStall(t *testing.T) {
	for _, tc := range []struct {
		name    string
		failFor time.Duration // renewals fail for this long
		taken   bool          // and b takes Lease x meanwhile
		listed  bool
	}{
		{name: "cut for a second, a Lease taken", failFor: time.Second, taken: true, listed: true},
		{name: "cut for a second, nothing taken", failFor: time.Second, listed: true},
		{name: "one failed renewal", failFor: DefaultHeartbeatPeriod},
		{name: "at rest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var fail atomic.Bool
			client := failingClient(&fail)
			var lists atomic.Int32
			client.PrependReactor("list", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
				lists.Add(1)
				return false, nil, nil
			})
			u := newUnit(t, client, "a", nil)
			ctx := t.Context()
			u.renew(ctx)
			u.beat("a")
			u.beat("b")
			u.evaluate()
			x := seed(t, client, svcLease(DefaultNamespace, "vip-addr-10-0-0-1", "a", ""), u)
			seed(t, client, svcLease(DefaultNamespace, "vip-addr-10-0-0-2", "a", ""), u)
			if got := u.HeldLeases(); len(got) != 2 {
				t.Fatalf("held before: %v", got)
			}
			period := u.o.HeartbeatPeriod
			for range 5 {
				u.clk.Step(period)
				u.renew(ctx)
			}
			fail.Store(true)
			for since := time.Duration(0); since < tc.failFor; since += period {
				u.clk.Step(period)
				u.renew(ctx)
			}
			if tc.taken {
				// b took x over (through the API server; a's watch is
				// not delivering).
				fail.Store(false)
				l := x.DeepCopy()
				b := "b"
				l.Spec.HolderIdentity = &b
				if _, err := client.CoordinationV1().Leases(DefaultNamespace).Update(ctx, l, metav1.UpdateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			fail.Store(false)
			u.clk.Step(period)
			u.renew(ctx)
			if !tc.listed {
				waitIdle(t, u)
				if n := lists.Load(); n != 0 {
					t.Fatalf("%d LISTs after renewals that never stalled long enough for a takeover", n)
				}
				return
			}
			deadline := time.Now().Add(30 * time.Second)
			for lists.Load() == 0 || !recheckDone(u) {
				if time.Now().After(deadline) {
					t.Fatal("no re-read of the Leases after renewals recovered")
				}
				time.Sleep(time.Millisecond)
			}
			if n := lists.Load(); n != 1 {
				t.Errorf("%d LISTs, want 1", n)
			}
			got := u.rec.leaseEvents()
			want := []string(nil)
			if tc.taken {
				want = []string{DefaultNamespace + "/vip-addr-10-0-0-1"}
			}
			if !slices.Equal(got, want) {
				t.Errorf("reported %v, want %v", got, want)
			}
			h, _ := u.Holder(DefaultNamespace, "vip-addr-10-0-0-1")
			if wantH := map[bool]string{true: "b", false: "a"}[tc.taken]; h != wantH {
				t.Errorf("cached holder of the taken Lease: %q, want %q", h, wantH)
			}
			if h, _ := u.Holder(DefaultNamespace, "vip-addr-10-0-0-2"); h != "a" {
				t.Errorf("holder of the Lease nobody took: %q", h)
			}
			// The next renewals read nothing more.
			u.clk.Step(period)
			u.renew(ctx)
			waitIdle(t, u)
			if n := lists.Load(); n != 1 {
				t.Errorf("%d LISTs after a further renewal, want 1", n)
			}
		})
	}
}

// recheckDone reports whether no re-read is pending or running.
func recheckDone(u *unit) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return !u.hb.recheck && !u.hb.rechecking
}

// waitIdle waits until no re-read runs (one may have been started).
func waitIdle(t *testing.T, u *unit) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		u.mu.Lock()
		running := u.hb.rechecking
		u.mu.Unlock()
		if !running {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the re-read does not end")
		}
		time.Sleep(time.Millisecond)
	}
}
