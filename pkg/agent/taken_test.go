package agent

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vip-lb/vip/pkg/election"
	"github.com/vip-lb/vip/pkg/lbsvc"
)

// TestFastWithdrawal: an address bound here goes at once, without the
// reconcile queue running, when another alive node holds its Lease or this
// node fenced itself; an address this node handed off stays until its
// successor announces, and one whose holder is dead stays (this node may
// take it over).
func TestFastWithdrawal(t *testing.T) {
	const vipB = "10.7.1.2"
	a1, a2 := netip.MustParseAddr(vipA), netip.MustParseAddr(vipB)
	lease1 := lbsvc.AddressLeaseName(a1)
	for _, tc := range []struct {
		name   string
		change func(w *world)
		// gone are the addresses withdrawn by the fast path; the others
		// must still be bound once it has handled every address.
		gone []netip.Addr
	}{
		{
			name: "taken by an alive node", gone: []netip.Addr{a1},
			change: func(w *world) {
				w.el.set(func(e *scriptElector) { e.byLease = map[string]Decision{lease1: heldByN2} })
				w.a.OnServiceLeaseChange(w.a.o.Namespace, lease1)
			},
		},
		{
			name: "holder is not alive: kept",
			change: func(w *world) {
				w.el.set(func(e *scriptElector) { e.byLease = map[string]Decision{lease1: {Holder: "n3"}} })
				w.a.OnServiceLeaseChange(w.a.o.Namespace, lease1)
			},
		},
		{
			name: "handed off: kept until the successor announces",
			change: func(w *world) {
				w.a.startHandOff(a1)
				w.el.set(func(e *scriptElector) { e.byLease = map[string]Decision{lease1: heldByN2} })
				w.a.OnServiceLeaseChange(w.a.o.Namespace, lease1)
			},
		},
		{
			name: "another agent namespace's Lease: ignored",
			change: func(w *world) {
				w.el.set(func(e *scriptElector) { e.byLease = map[string]Decision{lease1: heldByN2} })
				w.a.OnServiceLeaseChange("elsewhere", lease1)
			},
		},
		{
			name: "fenced: everything", gone: []netip.Addr{a1, a2},
			change: func(w *world) {
				w.el.set(func(e *scriptElector) { e.fenced = true })
				w.a.OnNodeChange("n1", false)
			},
		},
		{
			name: "not fenced when the liveness change is handled: kept",
			change: func(w *world) {
				w.a.OnNodeChange("n1", false)
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			el := &scriptElector{d: announceHere, alive: []string{"n1", "n2"}}
			w := newWorld(t, ModeARP, el, nil, svcWith("web", vipA), readySlice("web", "n1"),
				svcWith("api", vipB), readySlice("api", "n1"))
			w.converge()
			if got := w.ann.Held(); !slices.Equal(got, []netip.Addr{a1, a2}) {
				t.Fatalf("bound before the change: %v", got)
			}
			tc.change(w)
			// What the running loop (runFastWithdrawal) would do, one by one.
			for len(w.a.taken) > 0 {
				w.a.fastWithdraw(t.Context(), <-w.a.taken)
			}
			var want []netip.Addr
			for _, ad := range []netip.Addr{a1, a2} {
				if !slices.Contains(tc.gone, ad) {
					want = append(want, ad)
				}
			}
			if got := w.ann.Held(); !slices.Equal(got, want) {
				t.Errorf("bound after the fast withdrawal: %v, want %v", got, want)
			}
			if q := w.a.queue.Len(); len(tc.gone) > 0 && q == 0 {
				t.Error("withdrawn addresses were not queued for their full reconcile")
			}
		})
	}
}

// TestFastWithdrawalRuns: the running loop withdraws an address taken by
// another node while the reconcile queue does not move.
func TestFastWithdrawalRuns(t *testing.T) {
	a1 := netip.MustParseAddr(vipA)
	el := &scriptElector{d: announceHere, alive: []string{"n1", "n2"}}
	w := newWorld(t, ModeARP, el, nil, svcWith("web", vipA), readySlice("web", "n1"))
	w.converge()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); w.a.runFastWithdrawal(ctx) }()
	defer func() { cancel(); <-done }()
	w.el.set(func(e *scriptElector) { e.d = heldByN2 })
	w.a.OnServiceLeaseChange(w.a.o.Namespace, lbsvc.AddressLeaseName(a1))
	deadline := time.Now().Add(30 * time.Second)
	for slices.Contains(w.ann.Held(), a1) {
		if time.Now().After(deadline) {
			t.Fatal("the taken address is still bound")
		}
		time.Sleep(time.Millisecond)
	}
	if w.a.queue.Len() != 1 {
		t.Errorf("queue holds %d keys, want the address's reconcile", w.a.queue.Len())
	}
}

// TestFenceLiftedRebinds: a fence withdraws every address at once; when it
// lifts, the addresses whose Lease this node still holds are bound again at
// once, and one another node took meanwhile is not.
func TestFenceLiftedRebinds(t *testing.T) {
	const vipB = "10.7.1.2"
	a1, a2 := netip.MustParseAddr(vipA), netip.MustParseAddr(vipB)
	el := &scriptElector{d: announceHere, alive: []string{"n1", "n2"}}
	w := newWorld(t, ModeARP, el, nil, svcWith("web", vipA), readySlice("web", "n1"),
		svcWith("api", vipB), readySlice("api", "n1"))
	w.converge()
	run := func() {
		for len(w.a.taken) > 0 {
			w.a.fastWithdraw(t.Context(), <-w.a.taken)
		}
	}
	w.el.set(func(e *scriptElector) { e.fenced = true })
	w.a.OnNodeChange("n1", false)
	run()
	if got := w.ann.Held(); len(got) != 0 {
		t.Fatalf("bound while fenced: %v", got)
	}
	// n2 took vipB meanwhile; the fence lifts.
	w.el.set(func(e *scriptElector) {
		e.fenced = false
		e.byLease = map[string]Decision{lbsvc.AddressLeaseName(a2): heldByN2}
	})
	w.a.OnNodeChange("n1", true)
	run()
	if got := w.ann.Held(); !slices.Equal(got, []netip.Addr{a1}) {
		t.Errorf("bound after the fence lifted: %v, want [%s]", got, a1)
	}
	// The queued reconciles agree.
	w.converge()
	if got := w.ann.Held(); !slices.Equal(got, []netip.Addr{a1}) {
		t.Errorf("bound after the reconciles: %v, want [%s]", got, a1)
	}
}

// markedElector is a scriptElector with a Lease cache holding one Lease per
// name (the elector's view of the hand-off marks).
type markedElector struct {
	*scriptElector
	leases map[string]*coordv1.Lease
}

func (e *markedElector) Lease(_, name string) (*coordv1.Lease, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	l, ok := e.leases[name]
	return l, ok
}

// TestFastWithdrawalAfterHandOff: an address this node handed to a
// successor stays bound while the cached Lease carries its hand-off mark
// and the grace lasts, and goes at once when the successor's announcement
// removes the mark or when the grace ends.
func TestFastWithdrawalAfterHandOff(t *testing.T) {
	a1 := netip.MustParseAddr(vipA)
	lease := lbsvc.AddressLeaseName(a1)
	for _, tc := range []struct {
		name     string
		recorded bool          // the reconcile recorded the hand-off (startHandOff)
		marked   bool          // the Lease still carries n1's hand-off mark
		step     time.Duration // clock step after the change
		gone     bool
	}{
		{name: "successor has not announced", recorded: true, marked: true},
		{name: "successor announced", recorded: true, gone: true},
		{name: "hand-off not recorded yet", marked: true},
		{name: "grace over", recorded: true, marked: true, step: DefaultHandOffGrace, gone: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			el := &markedElector{scriptElector: &scriptElector{d: announceHere, alive: []string{"n1", "n2"}}}
			w := newWorld(t, ModeARP, el.scriptElector, func(o *Options) { o.Elector = el }, svcWith("web", vipA), readySlice("web", "n1"))
			w.converge()
			n2 := "n2"
			l := &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: lease, Namespace: w.a.o.Namespace}}
			l.Spec.HolderIdentity = &n2
			if tc.marked {
				l.Annotations = map[string]string{election.AnnotationHandedOffBy: "n1"}
			}
			el.set(func(e *scriptElector) { e.d = heldByN2 })
			el.mu.Lock()
			el.leases = map[string]*coordv1.Lease{lease: l}
			el.mu.Unlock()
			if tc.recorded {
				w.a.startHandOff(a1)
			}
			w.a.OnServiceLeaseChange(w.a.o.Namespace, lease)
			w.clk.Step(tc.step)
			drain := func() {
				for len(w.a.taken) > 0 {
					w.a.fastWithdraw(t.Context(), <-w.a.taken)
				}
			}
			drain()
			if tc.step > 0 {
				// The grace's end hands the address over from a goroutine.
				deadline := time.Now().Add(30 * time.Second)
				for slices.Contains(w.ann.Held(), a1) && time.Now().Before(deadline) {
					time.Sleep(time.Millisecond)
					drain()
				}
			}
			if bound := slices.Contains(w.ann.Held(), a1); bound == tc.gone {
				t.Errorf("bound = %v, want %v", bound, !tc.gone)
			}
		})
	}
}
