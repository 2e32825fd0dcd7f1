package agent

import (
	"context"
	"net/netip"

	"github.com/vip-lb/vip/pkg/lbsvc"
)

// Fast withdrawal. An address bound here must go as soon as this node
// learns it may no longer announce it: another alive node holds its Lease
// (a takeover while this node was cut off, seen through the watch or the
// elector's re-read after its renewals recovered), or this node fenced
// itself. The reconcile queue is no place to wait for that: it may be long
// (a burst of first announcements, each probing the link first) and the
// address's own reconcile may be waiting on the API server, while the
// address answers from two nodes. So such addresses are withdrawn at once
// by one goroutine, in one pass, and queued as before for the full
// reconcile (Events, forwarding, a hand-off or takeover decision).
//
// A fence can lift a moment later (the API server answers again before the
// peers got to the Leases). The addresses it withdrew whose Lease this
// node still holds are then bound again the same way, not after the queue:
// the Lease says they are this node's, and the queued reconcile follows.
//
// The goroutine may act beside a reconcile of the same address. The
// announcer converges each address under its own lock, so the worst case is
// a decision taken before the change landing after it; the queued
// reconcile then corrects it.

// takenBuffer bounds the addresses waiting for the goroutine; beyond it
// they wait in the reconcile queue only.
const takenBuffer = 4096

// fastKind is what the goroutine does with an address.
type fastKind int

const (
	fastTaken   fastKind = iota // withdraw: another alive node holds the Lease
	fastFenced                  // withdraw: this node fenced itself
	fastRestore                 // bind again: the fence lifted, the Lease is still ours
)

// pendingWithdrawal is an address for the goroutine.
type pendingWithdrawal struct {
	addr netip.Addr
	kind fastKind
}

// takenHolder returns the node holding addr's Lease when addr is bound here
// but another alive node holds it and this node need not keep it for a
// successor (keepForSuccessor).
func (a *Agent) takenHolder(addr netip.Addr) (string, bool) {
	if a.o.Mode != ModeARP || !a.desired.Has(addrKey(addr), addr) {
		return "", false
	}
	h, ok := a.o.Elector.Holder(a.o.Namespace, lbsvc.AddressLeaseName(addr))
	if !ok || h == "" || h == a.o.NodeName || !a.o.Elector.Alive(h) {
		return "", false
	}
	return h, !a.keepForSuccessor(addr)
}

// keepForSuccessor reports whether addr stays bound because this node
// handed it off and the successor has not announced it yet (make before
// break: handoff.go). The cached Lease tells: it still carries this node's
// hand-off mark until the successor's announcement removes it. A hand-off
// this node recorded ends after HandOffGrace whatever the mark says
// (startHandOff has the goroutine look again then); one not recorded yet (the watch can deliver
// the hand-off before the reconcile that wrote it records it, and a
// graceful stop records none) lasts as long as the mark.
func (a *Agent) keepForSuccessor(addr netip.Addr) bool {
	a.mu.Lock()
	until, handing := a.handing[addr]
	a.mu.Unlock()
	c, cached := a.o.Elector.(leaseCache)
	if !cached {
		return handing // the queue's reconcile reads the Lease
	}
	l, _ := c.Lease(a.o.Namespace, lbsvc.AddressLeaseName(addr))
	if !a.handOffPending(l) {
		return false
	}
	if !handing {
		return true
	}
	return a.o.Clock.Now().Before(until)
}

// withdrawSoon hands addr to the goroutine when another node took it; it
// never blocks (a full buffer leaves addr to the queue).
func (a *Agent) withdrawSoon(addr netip.Addr) {
	if _, ok := a.takenHolder(addr); ok {
		a.fast(pendingWithdrawal{addr: addr, kind: fastTaken})
	}
}

// fast hands p to the goroutine unless its buffer is full.
func (a *Agent) fast(p pendingWithdrawal) {
	select {
	case a.taken <- p:
	default:
	}
}

// fenceChanged is told this node's liveness as a candidate: fenced, every
// address bound here goes; alive again, those a fence withdrew come back.
func (a *Agent) fenceChanged(alive bool) {
	if !alive {
		if a.o.Elector.Fenced() {
			for _, addr := range a.boundAddrs() {
				a.fast(pendingWithdrawal{addr: addr, kind: fastFenced})
			}
		}
		return
	}
	a.mu.Lock()
	var back []netip.Addr
	for addr := range a.fencedOff {
		back = append(back, addr)
	}
	a.mu.Unlock()
	for _, addr := range back {
		a.fast(pendingWithdrawal{addr: addr, kind: fastRestore})
	}
}

// runFastWithdrawal handles the addresses handed to it until ctx ends.
func (a *Agent) runFastWithdrawal(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-a.taken:
			a.fastWithdraw(ctx, p)
		}
	}
}

// fastWithdraw handles one address if it still qualifies (the Lease may
// have come back, the fence may have lifted or come back) and queues its
// reconcile.
func (a *Agent) fastWithdraw(ctx context.Context, p pendingWithdrawal) {
	key := addrKey(p.addr)
	switch p.kind {
	case fastFenced:
		iface, bound := a.desired.Of(key)[p.addr]
		if !bound || !a.o.Elector.Fenced() {
			return
		}
		a.withdrawAddr(ctx, p.addr, "this node cannot renew its heartbeat (self-fenced)")
		a.mu.Lock()
		a.fencedOff[p.addr] = iface
		a.mu.Unlock()
	case fastRestore:
		a.mu.Lock()
		iface, ok := a.fencedOff[p.addr]
		delete(a.fencedOff, p.addr)
		a.mu.Unlock()
		h, _ := a.o.Elector.Holder(a.o.Namespace, lbsvc.AddressLeaseName(p.addr))
		if !ok || h != a.o.NodeName || a.o.Elector.Fenced() || !a.o.Elector.Alive(a.o.NodeName) ||
			len(a.sharers(p.addr)) == 0 || a.desired.Has(key, p.addr) {
			return
		}
		if _, err := a.declare(ctx, key, map[netip.Addr]string{p.addr: iface}); err != nil {
			a.log.Error(err, "binding again after the fence lifted", "vip", p.addr)
		} else {
			a.log.Info("announcing again: the fence lifted and this node still holds the Lease", "vip", p.addr, "iface", iface)
		}
	default:
		h, ok := a.takenHolder(p.addr)
		if !ok {
			return
		}
		a.withdrawAddr(ctx, p.addr, "owned by "+h)
	}
	a.queue.Add(key)
}
