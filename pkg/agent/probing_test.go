package agent

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	announcefake "github.com/vip-lb/vip/pkg/announce/fake"
)

// syncAddrProbed reconciles addr as the workers would, its probe included:
// a reconcile that starts a probe is followed, once the probe has ended, by
// the reconcile the probe's end asks for.
func syncAddrProbed(ctx context.Context, a *Agent, addr netip.Addr) error {
	err := a.syncAddr(ctx, addr)
	a.probing.wg.Wait()
	a.probing.mu.Lock()
	r := a.probing.runs[addr]
	a.probing.mu.Unlock()
	if err != nil || r == nil {
		return err
	}
	return a.syncAddr(ctx, addr)
}

// gatedProber answers only when told, and counts its probes.
type gatedProber struct {
	started chan netip.Addr
	answer  chan net.HardwareAddr
}

func (p *gatedProber) Probe(ctx context.Context, vip netip.Addr, _ string) (net.HardwareAddr, error) {
	p.started <- vip
	select {
	case mac := <-p.answer:
		return mac, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func newGatedProber() *gatedProber {
	return &gatedProber{started: make(chan netip.Addr, 10), answer: make(chan net.HardwareAddr)}
}

// startProbingAgent starts an ARP agent whose elector grants it vip's Lease
// fresh (so the address is probed first) and whose prober answers when
// told.
func startProbingAgent(t *testing.T, vip netip.Addr) (*Agent, *askingElector, *announcefake.Announcer, *gatedProber) {
	t.Helper()
	el := &askingElector{d: Decision{Announce: true, Holder: "n1", Changed: true, Fresh: true}, alive: []string{"n1"}}
	a, _, ann := startTestAgent(t, ModeARP, el, sharedSvc("web", vip, false), readySlice("web", "n1"))
	pr := newGatedProber()
	a.o.Prober = pr
	return a, el, ann, pr
}

// TestProbeRunsBesideTheWorkers: a reconcile that needs a probe starts it
// and returns at once (the worker is free for other addresses); the probe's
// end enqueues the address, and that reconcile announces it on the answer.
func TestProbeRunsBesideTheWorkers(t *testing.T) {
	vip := netip.MustParseAddr("10.7.0.30")
	a, el, ann, pr := startProbingAgent(t, vip)
	ctx := context.Background()

	if err := a.syncAddr(ctx, vip); err != nil {
		t.Fatal(err)
	}
	if got := <-pr.started; got != vip {
		t.Fatalf("probed %v", got)
	}
	if len(ann.Held()) != 0 {
		t.Fatalf("announced %v before the probe ended", ann.Held())
	}
	// Reconciled again while the probe runs: no second probe, nothing
	// announced.
	el.d.Fresh = false
	if err := a.syncAddr(ctx, vip); err != nil {
		t.Fatal(err)
	}
	if len(ann.Held()) != 0 || len(pr.started) != 0 {
		t.Fatalf("while probing: announced %v, %d more probes", ann.Held(), len(pr.started))
	}
	for a.queue.Len() > 0 { // what the Service informers enqueued
		k, _ := a.queue.Get()
		a.queue.Done(k)
	}
	pr.answer <- nil // nobody else answers
	a.probing.wg.Wait()
	if a.queue.Len() != 1 {
		t.Fatalf("the probe's end enqueued %d keys, want 1", a.queue.Len())
	}
	if k, _ := a.queue.Get(); k != addrKey(vip) {
		t.Fatalf("the probe's end enqueued %q, want %q", k, addrKey(vip))
	}
	if err := a.syncAddr(ctx, vip); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ann.Held(), []netip.Addr{vip}) {
		t.Fatalf("after the probe: announced %v", ann.Held())
	}
}

// TestProbeAnswerForgotten: an address whose Lease this node loses while
// its probe runs does not use the answer, and the probe's end does not
// reconcile it again.
func TestProbeAnswerForgotten(t *testing.T) {
	vip := netip.MustParseAddr("10.7.0.31")
	a, el, ann, pr := startProbingAgent(t, vip)
	ctx := context.Background()
	if err := a.syncAddr(ctx, vip); err != nil {
		t.Fatal(err)
	}
	<-pr.started
	el.d = Decision{Holder: "n2"} // another node holds it now
	if err := a.syncAddr(ctx, vip); err != nil {
		t.Fatal(err)
	}
	for a.queue.Len() > 0 {
		k, _ := a.queue.Get()
		a.queue.Done(k)
	}
	pr.answer <- nil
	a.probing.wg.Wait()
	if a.queue.Len() != 0 {
		t.Fatal("a forgotten probe's end reconciled the address again")
	}
	a.probing.mu.Lock()
	n := len(a.probing.runs)
	a.probing.mu.Unlock()
	if n != 0 || len(ann.Held()) != 0 {
		t.Fatalf("forgotten probe kept (%d) or address announced (%v)", n, ann.Held())
	}
}

// TestStaleProbeAnswerAsksAgain: an answer older than probeFresh (the
// reconcile came late) is not used; the link is asked again.
func TestStaleProbeAnswerAsksAgain(t *testing.T) {
	vip := netip.MustParseAddr("10.7.0.32")
	a, _, ann, pr := startProbingAgent(t, vip)
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	a.o.Clock = clk
	ctx := context.Background()
	if err := a.syncAddr(ctx, vip); err != nil {
		t.Fatal(err)
	}
	<-pr.started
	pr.answer <- nil
	a.probing.wg.Wait()
	clk.Step(probeFresh + time.Millisecond)
	if err := a.syncAddr(ctx, vip); err != nil {
		t.Fatal(err)
	}
	if len(ann.Held()) != 0 {
		t.Fatalf("announced %v on a stale answer", ann.Held())
	}
	if got := <-pr.started; got != vip {
		t.Fatalf("probed %v again, want %v", got, vip)
	}
	pr.answer <- nil
	a.probing.wg.Wait()
	if err := a.syncAddr(ctx, vip); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ann.Held(), []netip.Addr{vip}) {
		t.Fatalf("after the second probe: announced %v", ann.Held())
	}
}

// TestProbesStopWithTheAgent: the agent's end stops running probes.
func TestProbesStopWithTheAgent(t *testing.T) {
	vip := netip.MustParseAddr("10.7.0.33")
	a, _, _, pr := startProbingAgent(t, vip)
	if err := a.syncAddr(context.Background(), vip); err != nil {
		t.Fatal(err)
	}
	<-pr.started
	a.probing.stop() // returns only once the probe has ended
}
