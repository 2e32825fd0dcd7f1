package agent

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vip-lb/vip/pkg/election"
	"github.com/vip-lb/vip/pkg/lbsvc"
)

var leaseA = lbsvc.AddressLeaseName(netip.MustParseAddr(vipA))

// putLease creates or replaces the address Lease of vipA in the fake API.
func (w *world) putLease(holder string, ann map[string]string) {
	w.t.Helper()
	l := &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: leaseA, Namespace: "kube-system", Annotations: ann},
		Spec: coordv1.LeaseSpec{HolderIdentity: &holder}}
	leases := w.a.o.Client.CoordinationV1().Leases("kube-system")
	if _, err := leases.Update(context.Background(), l, metav1.UpdateOptions{}); err != nil {
		if _, err := leases.Create(context.Background(), l, metav1.CreateOptions{}); err != nil {
			w.t.Fatal(err)
		}
	}
}

func (w *world) lease() *coordv1.Lease {
	w.t.Helper()
	l, err := w.a.o.Client.CoordinationV1().Leases("kube-system").Get(context.Background(), leaseA, metav1.GetOptions{})
	if err != nil {
		w.t.Fatal(err)
	}
	return l
}

func (w *world) bound() bool { return slices.Contains(w.ann.Held(), netip.MustParseAddr(vipA)) }

// handedOff is a world where n1 announced vipA and has just handed its
// Lease to n2, which holds it now and has not announced yet.
func handedOff(t *testing.T) *world {
	t.Helper()
	el := &scriptElector{d: announceHere, alive: []string{"n1", "n2"}}
	w := newWorld(t, ModeARP, el, nil, svcWith("web", vipA), readySlice("web", "n1", "n2"))
	w.converge()
	el.set(func(e *scriptElector) { e.d = Decision{Holder: "n1", HandOffTo: "n2", Reason: "rebalancing"} })
	w.a.EnqueueAll()
	w.converge()
	// What the elector's Release wrote; from now on n2 holds it.
	w.putLease("n2", map[string]string{election.AnnotationHandedOffBy: "n1"})
	el.set(func(e *scriptElector) { e.d = heldByN2 })
	w.a.EnqueueAll()
	w.converge()
	if !w.bound() {
		t.Fatalf("withdrawn before the successor announced (released %v)", el.released)
	}
	if ev := w.events(); slices.ContainsFunc(ev, func(e string) bool { return strings.Contains(e, ReasonWithdrawn) }) {
		t.Fatalf("Withdrawn before the successor announced: %v", ev)
	}
	return w
}

// TestHandOffMakesBeforeBreak: an address handed to a successor stays
// bound here until the successor says it announced it, then goes.
func TestHandOffMakesBeforeBreak(t *testing.T) {
	w := handedOff(t)
	w.putLease("n2", map[string]string{AnnotationAnnouncedBy: "n2", AnnotationAnnouncedAt: "2026-01-02T03:04:05Z"})
	w.a.EnqueueAll()
	w.converge()
	if w.bound() {
		t.Fatal("still bound after the successor announced")
	}
	if ev := w.events(); len(ev) != 1 || !strings.Contains(ev[0], ReasonWithdrawn) {
		t.Fatalf("events %v, want one Withdrawn", ev)
	}
}

// TestHandOffGraceEnds: a successor that never says it announced costs at
// most HandOffGrace (on the fake clock) with the address here.
func TestHandOffGraceEnds(t *testing.T) {
	w := handedOff(t)
	waitFor(t, w.clk.HasWaiters)
	w.clk.Step(DefaultHandOffGrace - time.Millisecond)
	w.a.EnqueueAll()
	w.converge()
	if !w.bound() {
		t.Fatal("withdrawn before the grace ended")
	}
	w.clk.Step(time.Millisecond)
	waitFor(t, func() bool { return w.a.queue.Len() > 0 })
	w.converge()
	if w.bound() {
		t.Fatal("still bound after the grace")
	}
}

// TestHandOffTakenByAnother: a Lease another node took (not the
// successor's hand-off any more) ends the wait at once.
func TestHandOffTakenByAnother(t *testing.T) {
	w := handedOff(t)
	w.putLease("n3", nil)
	w.a.EnqueueAll()
	w.converge()
	if w.bound() {
		t.Fatal("still bound after n3 took the Lease")
	}
}

// TestSuccessorSaysItAnnounced: a node handed a Lease announces and then
// removes the hand-off mark, recording its announcement.
func TestSuccessorSaysItAnnounced(t *testing.T) {
	el := &scriptElector{d: Decision{Announce: true, Holder: "n1", Reason: "handed over"}, alive: []string{"n1", "n2"}}
	w := newWorld(t, ModeARP, el, nil, svcWith("web", vipA), readySlice("web", "n1", "n2"))
	w.putLease("n1", map[string]string{election.AnnotationHandedOffBy: "n2"})
	w.converge()
	if !w.bound() {
		t.Fatal("not announced")
	}
	l := w.lease()
	if _, ok := l.Annotations[election.AnnotationHandedOffBy]; ok || l.Annotations[AnnotationAnnouncedBy] != "n1" {
		t.Fatalf("Lease annotations %v: want the hand-off mark gone and announced-by n1", l.Annotations)
	}
}

// TestAwaitSuccessors: the graceful stop waits until every address bound
// here was announced by its next holder, whether the hand-off won or
// another node took the Lease first.
func TestAwaitSuccessors(t *testing.T) {
	for _, tc := range []struct {
		name string
		// holder and ann: the Lease once Shutdown is done; then the next
		// holder's announcement.
		holder string
		ann    map[string]string
	}{
		{name: "handed off", holder: "n2",
			ann: map[string]string{election.AnnotationHandedOffBy: "n1", AnnotationAnnouncedBy: "n1", AnnotationAnnouncedAt: "t1"}},
		{name: "taken by another node before the hand-off", holder: "n3",
			ann: map[string]string{AnnotationAnnouncedBy: "n1", AnnotationAnnouncedAt: "t1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := stopping(t)
			marks := w.a.BeginStop(context.Background())
			w.putLease(tc.holder, tc.ann)
			if got := w.a.awaitingSuccessors(context.Background(), marks); !slices.Equal(got, []string{vipA}) {
				t.Fatalf("before the announcement: waiting for %v, want [%s]", got, vipA)
			}
			w.putLease(tc.holder, map[string]string{AnnotationAnnouncedBy: tc.holder, AnnotationAnnouncedAt: "t2"})
			if got := w.a.awaitingSuccessors(context.Background(), marks); len(got) != 0 {
				t.Fatalf("after the announcement: waiting for %v", got)
			}
			if !w.a.AwaitSuccessors(context.Background(), marks) {
				t.Fatal("AwaitSuccessors: false once every next holder announced")
			}
		})
	}
}

// TestAwaitSuccessorsGrace: nobody says it announced: the wait ends after
// HandOffGrace of (fake) time.
func TestAwaitSuccessorsGrace(t *testing.T) {
	w := stopping(t)
	marks := w.a.BeginStop(context.Background())
	w.putLease("n2", map[string]string{election.AnnotationHandedOffBy: "n1"})
	done := make(chan bool, 1)
	start := w.clk.Now()
	go func() { done <- w.a.AwaitSuccessors(context.Background(), marks) }()
	for {
		select {
		case ok := <-done:
			if ok {
				t.Fatal("AwaitSuccessors: true, but nobody announced")
			}
			if waited := w.clk.Since(start); waited < DefaultHandOffGrace {
				t.Fatalf("gave up after %v of fake time, want %v", waited, DefaultHandOffGrace)
			}
			return
		default:
		}
		if w.clk.HasWaiters() {
			w.clk.Step(10 * time.Millisecond)
		}
		time.Sleep(time.Millisecond)
	}
}

// stopping is a world where n1 announces vipA and holds its Lease.
func stopping(t *testing.T) *world {
	t.Helper()
	el := &scriptElector{d: announceHere, alive: []string{"n1", "n2"}}
	w := newWorld(t, ModeARP, el, nil, svcWith("web", vipA), readySlice("web", "n1", "n2"))
	w.putLease("n1", map[string]string{AnnotationAnnouncedBy: "n1", AnnotationAnnouncedAt: "t1"})
	w.converge()
	if !w.bound() {
		t.Fatal("not announced")
	}
	return w
}
