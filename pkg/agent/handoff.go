package agent

import (
	"context"
	"net/netip"
	"time"

	coordv1 "k8s.io/api/coordination/v1"

	"github.com/vip-lb/vip/pkg/election"
	"github.com/vip-lb/vip/pkg/lbsvc"
)

// Make before break. A node that hands an address's Lease to a successor
// (rebalancing after the settle time, an exclude label, a graceful stop)
// keeps the address bound until the successor says it announced it: the
// successor's first announcement removes election.AnnotationHandedOffBy
// from the Lease. (A node that takes a Lease over marks it announced too,
// so a stopping node also knows when a taker that beat its hand-off has
// announced.) Clients whose packets still reach this node in between
// are served here instead of dropped. A successor that never says so costs
// at most Options.HandOffGrace with the address on both nodes (the
// successor's gratuitous ARPs have moved the clients by then); a Lease
// taken by any other node ends the wait at once. Addresses on a MAC of
// their own (DHCP macvlans) are never handed off this way.

// DefaultHandOffGrace bounds how long a node keeps serving an address it
// handed off when the successor does not say it announced it.
const DefaultHandOffGrace = time.Second

// handOffPending reports whether l is a Lease this node handed off whose
// successor has not announced yet.
func (a *Agent) handOffPending(l *coordv1.Lease) bool {
	return l != nil && l.Annotations[election.AnnotationHandedOffBy] == a.o.NodeName
}

// handedToUs reports whether l was handed to this node by another one and
// this node has not said it announced yet.
func (a *Agent) handedToUs(l *coordv1.Lease) bool {
	if l == nil || l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != a.o.NodeName {
		return false
	}
	by := l.Annotations[election.AnnotationHandedOffBy]
	return by != "" && by != a.o.NodeName
}

// startHandOff records that addr, still bound here, was just handed off.
func (a *Agent) startHandOff(addr netip.Addr) {
	a.mu.Lock()
	a.handing[addr] = a.o.Clock.Now().Add(a.o.HandOffGrace)
	a.mu.Unlock()
	a.queue.AddAfter(addrKey(addr), a.o.HandOffGrace)
	// The queue may be long: the fast path looks at the grace's end too
	// (taken.go). In a goroutine: a fake clock runs the function while it
	// holds its lock.
	a.o.Clock.AfterFunc(a.o.HandOffGrace, func() { go a.withdrawSoon(addr) })
}

// keepHandedOff is asked when another node holds addr's Lease: it reports
// whether addr stays bound here because this node handed it off less than
// HandOffGrace ago and the successor has not announced it yet (addr is
// requeued for when the grace ends).
func (a *Agent) keepHandedOff(ctx context.Context, addr netip.Addr) bool {
	a.mu.Lock()
	until, ok := a.handing[addr]
	a.mu.Unlock()
	if !ok {
		return false
	}
	now := a.o.Clock.Now()
	l, err := a.agentLease(ctx, lbsvc.AddressLeaseName(addr))
	if err == nil && now.Before(until) && a.handOffPending(l) {
		a.queue.AddAfter(addrKey(addr), until.Sub(now))
		return true
	}
	a.endHandOff(addr)
	return false
}

func (a *Agent) endHandOff(addr netip.Addr) {
	a.mu.Lock()
	delete(a.handing, addr)
	a.mu.Unlock()
}

// StopMarks are the announced marks of the addresses bound here when a
// graceful stop began (BeginStop).
type StopMarks map[netip.Addr]string

// announcedMark is a Lease's announced mark, "" when it has none.
func announcedMark(l *coordv1.Lease) string {
	if l == nil || l.Annotations[AnnotationAnnouncedBy] == "" {
		return ""
	}
	return l.Annotations[AnnotationAnnouncedBy] + "@" + l.Annotations[AnnotationAnnouncedAt]
}

// BeginStop snapshots the announced marks of the addresses bound here,
// before the Elector's Shutdown hands their Leases off.
func (a *Agent) BeginStop(ctx context.Context) StopMarks {
	m := StopMarks{}
	for _, addr := range a.boundAddrs() {
		l, _ := a.agentLease(ctx, lbsvc.AddressLeaseName(addr))
		m[addr] = announcedMark(l)
	}
	return m
}

// boundAddrs are the addresses this node announces per address (not the
// ones from the AddressSource).
func (a *Agent) boundAddrs() []netip.Addr {
	var out []netip.Addr
	for _, k := range a.desired.Owners() {
		if addr, ok := parseAddrKey(k); ok {
			out = append(out, addr)
		}
	}
	return out
}

// successorPending reports whether addr, bound here when the stop began
// with mark before, still waits for its next holder's announcement: the
// Lease is marked handed off by this node, or another node took it and has
// not marked it since.
func (a *Agent) successorPending(l *coordv1.Lease, before string) bool {
	if l == nil || l.Spec.HolderIdentity == nil {
		return false // gone or released to nobody
	}
	switch h := *l.Spec.HolderIdentity; {
	case h == a.o.NodeName:
		return false // not handed off (the error was logged): withdraw
	case a.handOffPending(l):
		return true
	default:
		return l.Annotations[AnnotationAnnouncedBy] != h || announcedMark(l) == before
	}
}

// AwaitSuccessors is the graceful stop's wait between the Elector's
// Shutdown (every Lease handed off) and WithdrawEverything: it returns
// true once every address bound here was announced by its next holder,
// false after HandOffGrace or when ctx ends.
func (a *Agent) AwaitSuccessors(ctx context.Context, before StopMarks) bool {
	start := a.o.Clock.Now()
	t := a.o.Clock.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		waiting := a.awaitingSuccessors(ctx, before)
		waited := a.o.Clock.Since(start)
		switch {
		case len(waiting) == 0:
			a.log.Info("the next holders announced every address handed off", "addresses", len(before), "took", waited.String())
			return true
		case waited >= a.o.HandOffGrace:
			a.log.Info("next holders did not say they announced; withdrawing anyway", "vip", waiting, "waited", waited.String())
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C():
		}
	}
}

// awaitingSuccessors are the addresses of before whose next holder has not
// announced them yet.
func (a *Agent) awaitingSuccessors(ctx context.Context, before StopMarks) []string {
	var waiting []string
	for addr, mark := range before {
		if l, err := a.agentLease(ctx, lbsvc.AddressLeaseName(addr)); err == nil && a.successorPending(l, mark) {
			waiting = append(waiting, addr.String())
		}
	}
	return waiting
}
