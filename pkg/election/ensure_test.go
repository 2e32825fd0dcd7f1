package election

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	coordv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestEnsureDecisions(t *testing.T) {
	all := []string{"a", "b", "c"}
	type setup struct {
		key        string         // service key
		holder     *string        // nil: no Lease
		candidates []string       // default all
		dead       []string       // nodes whose heartbeat went stale
		fenced     bool           // this node fenced itself
		rebalance  bool           // Options.Rebalance
		settled    bool           // the peers have been alive for SettleTime
		conflict   *coordv1.Lease // the API server holds this newer Lease
	}
	str := func(s string) *string { return &s }
	for _, tc := range []struct {
		name string
		setup
		want       Result
		wantHolder *string // Lease holder in the API server afterwards; nil = no Lease
		wantWrite  bool
	}{{
		name:       "no lease, this node preferred: create",
		setup:      setup{key: keyPreferring(t, "a", all...)},
		want:       Result{ShouldAnnounce: true, Holder: "a", Change: Acquired, Fresh: true},
		wantHolder: str("a"), wantWrite: true,
	}, {
		name:  "no lease, other preferred: wait",
		setup: setup{key: keyPreferring(t, "b", all...)},
		want:  Result{},
	}, {
		name: "no lease, preferred is dead: the next one creates",
		setup: setup{key: keyWith(t, func(k string) bool {
			return Preferred(k, all) == "b" && Preferred(k, []string{"a", "c"}) == "a"
		}), dead: []string{"b"}},
		want:       Result{ShouldAnnounce: true, Holder: "a", Change: Acquired, Fresh: true},
		wantHolder: str("a"), wantWrite: true,
	}, {
		name:       "own lease, candidate: keep, no write",
		setup:      setup{key: keyPreferring(t, "b", all...), holder: str("a")},
		want:       Result{ShouldAnnounce: true, Holder: "a"},
		wantHolder: str("a"),
	}, {
		name:       "own lease, not a candidate: hand off to the preferred other",
		setup:      setup{key: keyPreferring(t, "b", all...), holder: str("a"), candidates: []string{"b", "c"}},
		want:       Result{Holder: "a", Change: HandedOff, Release: true, Successor: "b"},
		wantHolder: str("a"),
	}, {
		name:       "own lease, not a candidate, nobody else alive: release",
		setup:      setup{key: keyPreferring(t, "b", all...), holder: str("a"), candidates: []string{"b"}, dead: []string{"b", "c"}},
		want:       Result{Holder: "a", Change: Released, Release: true},
		wantHolder: str("a"),
	}, {
		name:       "own lease, rebalance, preferred not settled: keep and requeue",
		setup:      setup{key: keyPreferring(t, "b", all...), holder: str("a"), rebalance: true},
		want:       Result{ShouldAnnounce: true, Holder: "a", RequeueAfter: 5 * time.Second},
		wantHolder: str("a"),
	}, {
		name:       "own lease, rebalance, preferred settled: hand off",
		setup:      setup{key: keyPreferring(t, "b", all...), holder: str("a"), rebalance: true, settled: true},
		want:       Result{Holder: "a", Change: HandedOff, Release: true, Successor: "b"},
		wantHolder: str("a"),
	}, {
		name:       "own lease, rebalance, this node preferred: keep",
		setup:      setup{key: keyPreferring(t, "a", all...), holder: str("a"), rebalance: true, settled: true},
		want:       Result{ShouldAnnounce: true, Holder: "a"},
		wantHolder: str("a"),
	}, {
		name:       "own lease, fenced: stop announcing, no write",
		setup:      setup{key: keyPreferring(t, "a", all...), holder: str("a"), fenced: true},
		want:       Result{Holder: "a"},
		wantHolder: str("a"),
	}, {
		name:       "other fresh holder: not ours even if we are preferred",
		setup:      setup{key: keyPreferring(t, "a", all...), holder: str("c")},
		want:       Result{Holder: "c"},
		wantHolder: str("c"),
	}, {
		name:       "stale holder, this node the successor: take over",
		setup:      setup{key: keyPreferring(t, "a", "a", "b"), holder: str("c"), dead: []string{"c"}},
		want:       Result{ShouldAnnounce: true, Holder: "a", Change: TookOver},
		wantHolder: str("a"), wantWrite: true,
	}, {
		name:       "stale holder, other successor: wait",
		setup:      setup{key: keyPreferring(t, "b", "a", "b"), holder: str("c"), dead: []string{"c"}},
		want:       Result{Holder: "c"},
		wantHolder: str("c"),
	}, {
		name:       "alive holder no longer a candidate: wait for its hand-off",
		setup:      setup{key: keyPreferring(t, "a", "a", "b"), holder: str("c"), candidates: []string{"a", "b"}},
		want:       Result{Holder: "c", RequeueAfter: DefaultHeartbeatTimeout},
		wantHolder: str("c"),
	}, {
		name:       "unset holder: acquire",
		setup:      setup{key: keyPreferring(t, "a", all...), holder: str("")},
		want:       Result{ShouldAnnounce: true, Holder: "a", Change: Acquired, Fresh: true},
		wantHolder: str("a"), wantWrite: true,
	}, {
		name: "lost the race: the API server has a newer holder",
		setup: setup{key: keyPreferring(t, "a", "a", "b"), holder: str("c"), dead: []string{"c"},
			conflict: svcLease(DefaultNamespace, "kubevip-x", "b", "")},
		want:       Result{Holder: "b"},
		wantHolder: str("b"), wantWrite: true,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			client := newFakeClient()
			reg := prometheus.NewRegistry()
			u := newUnit(t, client, "a", func(o *Options) { o.Rebalance = tc.rebalance; o.Registerer = reg })
			u.ready()
			u.beat("b")
			u.beat("c")
			u.evaluate()
			if tc.settled {
				u.tick(5*time.Second, true, "b", "c")
			}
			if len(tc.dead) > 0 {
				var renewing []string
				for _, n := range []string{"b", "c"} {
					if !strings.Contains(strings.Join(tc.dead, ","), n) {
						renewing = append(renewing, n)
					}
				}
				u.tick(u.o.HeartbeatTimeout+u.o.HeartbeatPeriod, true, renewing...)
				for _, n := range tc.dead {
					if u.Alive(n) {
						t.Fatalf("%s should be stale", n)
					}
				}
			}
			if tc.fenced {
				u.mu.Lock()
				u.hb.fenced = true
				u.mu.Unlock()
			}
			if tc.holder != nil {
				seed(t, client, svcLease(DefaultNamespace, "kubevip-x", *tc.holder, ""), u)
			}
			if tc.conflict != nil {
				cur := stored(t, client, DefaultNamespace, "kubevip-x")
				cur.Spec.HolderIdentity = tc.conflict.Spec.HolderIdentity
				if _, err := client.CoordinationV1().Leases(DefaultNamespace).Update(t.Context(), cur, metav1.UpdateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			cands := tc.candidates
			if cands == nil {
				cands = all
			}
			writes := testutil.ToFloat64(u.metrics.writes.WithLabelValues(writeService))
			got, err := u.Ensure(t.Context(), DefaultNamespace, "kubevip-x", tc.key, cands)
			if err != nil {
				t.Fatal(err)
			}
			if got.Reason == "" {
				t.Error("empty reason")
			}
			got.Reason = ""
			if got != tc.want {
				t.Errorf("Ensure = %+v, want %+v", got, tc.want)
			}
			wrote := testutil.ToFloat64(u.metrics.writes.WithLabelValues(writeService)) > writes
			if wrote != tc.wantWrite {
				t.Errorf("wrote = %v, want %v", wrote, tc.wantWrite)
			}
			l := stored(t, client, DefaultNamespace, "kubevip-x")
			switch {
			case tc.wantHolder == nil && l != nil:
				t.Errorf("lease exists, held by %q", holderOf(l))
			case tc.wantHolder != nil && (l == nil || holderOf(l) != *tc.wantHolder):
				t.Errorf("lease holder = %q, want %q", holderOf(l), *tc.wantHolder)
			}
			if tc.want.Change == TookOver && testutil.ToFloat64(u.metrics.takeovers) != 1 {
				t.Error("vip_agent_lease_takeovers_total not incremented")
			}
			if got.ShouldAnnounce && got.Change != None {
				checkServiceLease(t, l, "a", "x")
				if h, ok := u.Holder(DefaultNamespace, "kubevip-x"); !ok || h != "a" {
					t.Errorf("Holder right after the write = %q, %v", h, ok)
				}
			}
		})
	}
}

// checkServiceLease checks the fields kubectl readers see.
func checkServiceLease(t *testing.T, l *coordv1.Lease, holder, svc string) {
	t.Helper()
	if l.Labels[LabelManagedBy] != ManagedByValue || l.Labels[LabelRole] != RoleService {
		t.Errorf("labels = %v", l.Labels)
	}
	if svc != "" && !strings.HasPrefix(l.Labels[LabelService], "svc-") {
		t.Errorf("service label = %q", l.Labels[LabelService])
	}
	if holderOf(l) != holder || l.Spec.AcquireTime == nil || l.Spec.RenewTime == nil ||
		l.Spec.LeaseDurationSeconds == nil || *l.Spec.LeaseDurationSeconds != 1 || l.Annotations[AnnotationReason] == "" {
		t.Errorf("spec = %+v, annotations %v", l.Spec, l.Annotations)
	}
}

func TestReleaseWritesSuccessor(t *testing.T) {
	client := newFakeClient()
	u := newUnit(t, client, "a", nil)
	u.ready()
	u.beat("b")
	u.evaluate()
	seed(t, client, svcLease(DefaultNamespace, "kubevip-x", "a", ""), u)
	res, err := u.Ensure(t.Context(), DefaultNamespace, "kubevip-x", "default/svc-x", []string{"b"})
	if err != nil || !res.Release || res.Successor != "b" || res.ShouldAnnounce {
		t.Fatalf("Ensure = %+v, %v", res, err)
	}
	if err := u.Release(t.Context(), DefaultNamespace, "kubevip-x", res.Successor); err != nil {
		t.Fatal(err)
	}
	l := stored(t, client, DefaultNamespace, "kubevip-x")
	if holderOf(l) != "b" || l.Spec.LeaseTransitions == nil || *l.Spec.LeaseTransitions != 1 ||
		!strings.Contains(l.Annotations[AnnotationReason], "no longer a candidate") {
		t.Errorf("after Release: holder %q, spec %+v, reason %q", holderOf(l), l.Spec, l.Annotations[AnnotationReason])
	}
	if l.Annotations[AnnotationHandedOffBy] != "a" {
		t.Errorf("after a hand-off: %s = %q, want a", AnnotationHandedOffBy, l.Annotations[AnnotationHandedOffBy])
	}
	// Any other change of holder removes the hand-off mark.
	taken := l.DeepCopy()
	u.claim(taken, "c", "", "took over", u.o.Clock.Now())
	if _, ok := taken.Annotations[AnnotationHandedOffBy]; ok {
		t.Errorf("a claim kept %s", AnnotationHandedOffBy)
	}
	// Releasing what is not ours is a no-op.
	if err := u.Release(t.Context(), DefaultNamespace, "kubevip-x", ""); err != nil {
		t.Fatal(err)
	}
	if holderOf(stored(t, client, DefaultNamespace, "kubevip-x")) != "b" {
		t.Error("released a lease held by another node")
	}
	// Release to nobody unsets the holder.
	seed(t, client, svcLease(DefaultNamespace, "kubevip-y", "a", ""), u)
	if err := u.Release(t.Context(), DefaultNamespace, "kubevip-y", ""); err != nil {
		t.Fatal(err)
	}
	if l := stored(t, client, DefaultNamespace, "kubevip-y"); l.Spec.HolderIdentity != nil || l.Spec.AcquireTime != nil ||
		l.Annotations[AnnotationHandedOffBy] != "" {
		t.Errorf("released lease: %+v, annotations %v", l.Spec, l.Annotations)
	}
}

func TestDelete(t *testing.T) {
	client := newFakeClient()
	u := newUnit(t, client, "a", nil)
	l := seed(t, client, svcLease(DefaultNamespace, "kubevip-x", "a", ""), u)
	// Changed meanwhile: kept.
	cur := l.DeepCopy()
	cur.Annotations = map[string]string{"x": "y"}
	if _, err := client.CoordinationV1().Leases(DefaultNamespace).Update(t.Context(), cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := u.Delete(t.Context(), DefaultNamespace, "kubevip-x"); err != nil {
		t.Fatal(err)
	}
	if stored(t, client, DefaultNamespace, "kubevip-x") == nil {
		t.Fatal("deleted a lease that changed since it was seen")
	}
	// Up to date: deleted; again: NotFound is fine.
	if err := u.informer.GetIndexer().Update(stored(t, client, DefaultNamespace, "kubevip-x")); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := u.Delete(t.Context(), DefaultNamespace, "kubevip-x"); err != nil {
			t.Fatal(err)
		}
	}
	if stored(t, client, DefaultNamespace, "kubevip-x") != nil {
		t.Fatal("lease not deleted")
	}
	// Unknown to the cache (no labels, say from kube-vip): found and deleted.
	kv := svcLease(DefaultNamespace, "kubevip-old", "z", "")
	kv.Labels = nil
	seed(t, client, kv)
	if err := u.Delete(t.Context(), DefaultNamespace, "kubevip-old"); err != nil {
		t.Fatal(err)
	}
	if stored(t, client, DefaultNamespace, "kubevip-old") != nil {
		t.Fatal("unlabelled lease leaked")
	}
}

func TestRacingElectorsExactlyOneWinner(t *testing.T) {
	for _, existing := range []bool{false, true} {
		name := map[bool]string{false: "create", true: "takeover"}[existing]
		t.Run(name, func(t *testing.T) {
			client := newFakeClient()
			const n = 8
			units := make([]*unit, n)
			var all []string
			for i := range units {
				units[i] = newUnit(t, client, string(rune('a'+i)), nil)
				all = append(all, units[i].self)
			}
			for _, u := range units {
				u.ready()
				for _, n := range all {
					u.beat(n)
				}
				u.evaluate()
			}
			if existing {
				// Held by a node none of them has ever seen alive.
				seed(t, client, svcLease(DefaultNamespace, "kubevip-x", "dead", ""), units...)
			}
			before := client.successes()
			results := make([]Result, n)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i, u := range units {
				wg.Go(func() {
					<-start
					// Each is given only itself as candidate, so all believe
					// they should own it, and a loser sees the winner as a
					// non-candidate holder to take over from: a chain of CAS.
					var err error
					results[i], err = u.Ensure(t.Context(), DefaultNamespace, "kubevip-x", "default/svc-x", []string{u.self})
					if err != nil && !apierrors.IsConflict(err) { // losing maxAttempts races in a row is fine
						t.Error(err)
					}
				})
			}
			close(start)
			wg.Wait()
			// Every acquisition is a create or a CAS: of all the writes
			// based on one version, exactly one succeeded.
			wins := client.successes()
			total := 0
			for base, n := range wins {
				n -= before[base]
				if n == 0 {
					continue
				}
				if n != 1 {
					t.Errorf("%d successful writes based on %s", n, base)
				}
				total += n
			}
			// Each elector that was told to announce made one of those
			// writes; the last writer holds the Lease.
			announced := 0
			holder := holderOf(stored(t, client, DefaultNamespace, "kubevip-x"))
			holderAnnounced := false
			for i, r := range results {
				if r.ShouldAnnounce {
					announced++
					holderAnnounced = holderAnnounced || units[i].self == holder
				}
			}
			if announced != total || !holderAnnounced {
				t.Errorf("%d electors told to announce, %d successful writes, holder %s announced: %v", announced, total, holder, holderAnnounced)
			}
			// Now that the race is over, every elector agrees on one owner.
			for _, u := range units {
				u.informer.GetIndexer().Update(stored(t, client, DefaultNamespace, "kubevip-x"))
			}
			winners := 0
			for _, u := range units {
				r, err := u.Ensure(t.Context(), DefaultNamespace, "kubevip-x", "default/svc-x", all)
				if err != nil {
					t.Fatal(err)
				}
				if r.ShouldAnnounce {
					winners++
				}
				if r.Holder != holder {
					t.Errorf("%s sees holder %q, want %q", u.self, r.Holder, holder)
				}
			}
			if winners != 1 {
				t.Errorf("%d winners after the race", winners)
			}
		})
	}
}

func TestEnsureAfterShutdown(t *testing.T) {
	client := newFakeClient()
	u := newUnit(t, client, "a", nil)
	if err := u.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Ensure(t.Context(), DefaultNamespace, "kubevip-x", "default/svc-x", []string{"a"}); !errors.Is(err, ErrShuttingDown) {
		t.Fatalf("err = %v", err)
	}
}
