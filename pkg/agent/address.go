package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	v1 "k8s.io/api/core/v1"

	"github.com/vip-lb/vip/pkg/lbsvc"
)

// Ownership is per address: every Service whose status carries an address
// is announced from the node holding the address's Lease (layer 2), or from
// the same set of nodes (BGP). The queue carries Service keys and address
// keys; a Service reconcile enqueues its addresses, an address reconcile
// converges this node's announcement of it.

// addrKeyPrefix marks address keys in the queue and owner names in the
// announcer: "@<addr>".
const addrKeyPrefix = "@"

// ingressIndex indexes Services by the addresses in their status.
const ingressIndex = "ingress"

func addrKey(a netip.Addr) string { return addrKeyPrefix + a.String() }

// parseAddrKey returns the address of an address key.
func parseAddrKey(key string) (netip.Addr, bool) {
	s, ok := strings.CutPrefix(key, addrKeyPrefix)
	if !ok {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(s)
	return a, err == nil
}

// indexByIngress indexes a Service by its status addresses.
func indexByIngress(obj any) ([]string, error) {
	svc, ok := obj.(*v1.Service)
	if !ok {
		return nil, nil
	}
	var out []string
	for _, a := range lbsvc.IngressIPs(svc) {
		out = append(out, a.String())
	}
	return out, nil
}

// sharers returns the Services to serve on addr, sorted by key: those that
// want a load balancer of our class, are not being deleted, carry addr in
// status and do not obtain it from the AddressSource (those are elected per
// Service).
func (a *Agent) sharers(addr netip.Addr) []*v1.Service {
	objs, err := a.svcIndex.ByIndex(ingressIndex, addr.String())
	if err != nil {
		return nil
	}
	var out []*v1.Service
	for _, o := range objs {
		svc, ok := o.(*v1.Service)
		if !ok || goneReason(svc, nil, a.o.Class) != "" || a.sourced(svc) {
			continue
		}
		out = append(out, svc)
	}
	sort.Slice(out, func(i, j int) bool { return lbsvc.Key(out[i]) < lbsvc.Key(out[j]) })
	return out
}

// sharedCandidates is the intersection of the Services' candidates: every
// Service on the address must be servable from the announcing node.
func (a *Agent) sharedCandidates(svcs []*v1.Service) []string {
	var out []string
	for i, svc := range svcs {
		c := a.candidates(svc)
		if i == 0 {
			out = c
			continue
		}
		out = slices.DeleteFunc(out, func(n string) bool { return !slices.Contains(c, n) })
	}
	return out
}

// syncAddr converges this node's announcement of addr.
func (a *Agent) syncAddr(ctx context.Context, addr netip.Addr) error {
	key := addrKey(addr)
	all := a.sharers(addr)
	if len(all) == 0 {
		a.withdrawAddr(ctx, addr, "no Service has the address any more")
		a.forgetProbe(addr)
		return a.forgetAddrLease(ctx, addr)
	}
	// Services without a ready endpoint are not announced (kube-vip and
	// MetalLB withdraw them too); the others on the address still are.
	served, idle := a.splitByEndpoints(all)
	cands := a.sharedCandidates(served)
	if len(served) == 0 {
		cands = a.sharedCandidates(all) // keep the owner while they have none
	}
	if a.o.Mode == ModeBGP {
		switch {
		case len(served) == 0:
			a.withdrawIdle(ctx, addr)
		case slices.Contains(cands, a.o.NodeName):
			return a.announceAddr(ctx, addr, served, idle, "eligible node", false)
		default:
			a.withdrawAddr(ctx, addr, "this node is not a candidate for every Service on the address (excluded, or no ready local endpoint)")
		}
		return nil
	}
	if a.o.Elector.Fenced() {
		a.withdrawAddr(ctx, addr, "this node cannot renew its heartbeat (self-fenced)")
		return nil
	}
	lease := lbsvc.AddressLeaseName(addr)
	d, err := a.elect(ctx, key, lease, addr.String(), cands)
	if err != nil {
		return err
	}
	switch {
	case d.HandOffTo != "":
		a.forgetProbe(addr)
		// To a successor: make before break (handoff.go); to nobody:
		// withdrawn first.
		bound := d.HandOffTo != releaseToNobody && a.desired.Has(key, addr)
		if !bound {
			a.withdrawAddr(ctx, addr, "handing over: "+d.Reason)
		}
		if err := a.o.Elector.Release(ctx, a.o.Namespace, lease, d.HandOffTo); err != nil {
			return fmt.Errorf("handing %s to %s: %w", addr, d.HandOffTo, err)
		}
		if bound {
			a.startHandOff(addr)
		}
		a.log.V(1).Info("handed over", "vip", addr, "to", d.HandOffTo, "reason", d.Reason, "servingUntilSuccessorAnnounces", bound)
		return nil
	case d.Announce && len(served) == 0:
		if d.Fresh && a.o.Prober != nil {
			a.mu.Lock()
			a.unprobed[addr] = true
			a.mu.Unlock()
		}
		a.withdrawIdle(ctx, addr)
		return nil
	case d.Announce:
		probed, err := a.probeFirst(ctx, addr, all, d.Fresh)
		if err != nil {
			if errors.Is(err, errInUse) || errors.Is(err, errProbing) {
				return nil
			}
			return err
		}
		if err := a.announceAddr(ctx, addr, served, idle, d.Reason, d.Changed); err != nil {
			return err
		}
		a.endHandOff(addr)
		a.mu.Lock()
		mark := probed || a.unmarked[addr]
		a.mu.Unlock()
		if !mark && !d.Changed {
			// Handed over: the node it came from serves until told
			// (handoff.go).
			l, err := a.agentLease(ctx, lease)
			mark = err == nil && a.handedToUs(l)
		}
		// Taken over (d.Changed): marked too, for a stopping holder
		// that waits (AwaitSuccessors).
		mark = mark || d.Changed
		if mark {
			// Announced after asking the link: a takeover or restart
			// need not ask again (unless a conflict is recorded later).
			// Retried until written: without the mark the next owner
			// probes and may meet the address still bound here.
			if err := a.markAnnounced(ctx, addr); err != nil {
				a.mu.Lock()
				a.unmarked[addr] = true
				a.mu.Unlock()
				return fmt.Errorf("%w (retried; until then the next owner probes it)", err)
			}
			a.mu.Lock()
			delete(a.unmarked, addr)
			a.mu.Unlock()
		}
		a.cleanupLegacy(ctx, all)
		return nil
	default:
		if d.Holder != "" && a.keepHandedOff(ctx, addr) {
			return nil
		}
		why := "owned by " + d.Holder
		if d.Holder == "" {
			why = "no owner elected yet"
		}
		a.forgetProbe(addr)
		a.withdrawAddr(ctx, addr, why)
		return nil
	}
}

// announceAddr announces addr for svcs (on the interface the first of them
// asks for) and tells each Service once.
// idle are the Services on addr that have no ready endpoint: one that was
// announced here is told it no longer is.
func (a *Agent) announceAddr(ctx context.Context, addr netip.Addr, svcs, idle []*v1.Service, reason string, changed bool) error {
	key := addrKey(addr)
	iface := a.interfaceFor(svcs[0])
	ch, err := a.declare(ctx, key, map[netip.Addr]string{addr: iface})
	if err != nil {
		for _, svc := range svcs {
			a.rec.Event(svc, v1.EventTypeWarning, ReasonAnnounceFail, err.Error())
		}
		return err
	}
	if len(ch.Announced) > 0 {
		a.log.Info("announcing", "vip", addr, "services", len(svcs), "iface", iface, "reason", reason)
	}
	how := "ARP"
	switch {
	case a.o.Mode == ModeBGP:
		how = "BGP"
	case addr.Is6():
		how = "NDP"
	}
	keys := make([]string, 0, len(svcs))
	a.mu.Lock()
	told := a.told[addr]
	if told == nil {
		told = map[string]bool{}
		a.told[addr] = told
	}
	var fresh []*v1.Service
	for _, svc := range svcs {
		k := lbsvc.Key(svc)
		keys = append(keys, k)
		if !told[k] {
			told[k] = true
			fresh = append(fresh, svc)
		}
	}
	var left []string
	for k := range told {
		if !slices.Contains(keys, k) {
			delete(told, k)
			left = append(left, k)
		}
	}
	a.mu.Unlock()
	for _, svc := range fresh {
		msg := fmt.Sprintf("Announcing %s via %s from %s", addr, how, a.o.NodeName)
		if changed && reason != "" {
			msg += " (" + reason + ")"
		}
		a.rec.Event(svc, v1.EventTypeNormal, ReasonAnnouncing, msg)
	}
	// Every reconcile: a Service's ports may have changed.
	for _, svc := range svcs {
		a.forward(lbsvc.Key(svc), svc)
	}
	for _, k := range left {
		if i := slices.IndexFunc(idle, func(s *v1.Service) bool { return lbsvc.Key(s) == k }); i >= 0 {
			a.rec.Eventf(idle[i], v1.EventTypeWarning, ReasonNoReadyEndpoints, "Withdrew %s from %s: %s", addr, a.o.NodeName, noEndpointsWhy)
		}
		a.forwardChanged(ctx, k)
	}
	return nil
}

// withdrawAddr stops announcing addr and tells the Services that were told.
func (a *Agent) withdrawAddr(ctx context.Context, addr netip.Addr, why string) {
	a.withdrawAddrAs(ctx, addr, why, v1.EventTypeNormal, ReasonWithdrawn)
}

// withdrawIdle withdraws an address none of whose Services has a ready
// endpoint.
func (a *Agent) withdrawIdle(ctx context.Context, addr netip.Addr) {
	a.withdrawAddrAs(ctx, addr, noEndpointsWhy, v1.EventTypeWarning, ReasonNoReadyEndpoints)
}

// withdrawAddrAs is withdrawAddr with the Event's type and reason.
func (a *Agent) withdrawAddrAs(ctx context.Context, addr netip.Addr, why, typ, reason string) {
	key := addrKey(addr)
	have := a.desired.Has(key, addr)
	a.mu.Lock()
	told := a.told[addr]
	delete(a.told, addr)
	delete(a.handing, addr)
	a.mu.Unlock()
	// Forwarding goes before the address (UPnP asks the gateway from the
	// Service address, which must still be bound).
	for k := range told {
		if a.o.Forwarder != nil && len(a.servedAddrs(k)) == 0 {
			a.unforward(ctx, k)
		}
	}
	if have {
		_, _ = a.declare(ctx, key, nil)
		a.log.Info("withdrawn", "vip", addr, "reason", why)
	}
	for k := range told {
		svc := a.Service(k)
		if svc != nil && have {
			a.rec.Eventf(svc, typ, reason, "Withdrew %s from %s: %s", addr, a.o.NodeName, why)
		}
		if svc != nil && len(a.servedAddrs(k)) > 0 {
			a.forward(k, svc) // still served here on another address
		}
	}
}

// forgetAddrLease deletes the Lease of an address no Service carries: the
// holder does it, or anyone if the holder is dead.
func (a *Agent) forgetAddrLease(ctx context.Context, addr netip.Addr) error {
	a.mu.Lock()
	delete(a.holders, addrKey(addr))
	a.mu.Unlock()
	if a.o.Mode != ModeARP {
		return nil
	}
	lease := lbsvc.AddressLeaseName(addr)
	holder, exists := a.o.Elector.Holder(a.o.Namespace, lease)
	if !exists {
		return nil
	}
	if holder == a.o.NodeName || holder == "" || !a.o.Elector.Alive(holder) {
		if err := a.o.Elector.Delete(ctx, a.o.Namespace, lease); err != nil {
			return fmt.Errorf("deleting Lease %s/%s: %w", a.o.Namespace, lease, err)
		}
	}
	return nil
}

// Service returns the Service of key from the agent's cache (nil when gone
// or not served by this agent); plug-ins use it to put Events on Services.
func (a *Agent) Service(key string) *v1.Service {
	ns, name, ok := strings.Cut(key, "/")
	if !ok {
		return nil
	}
	svc, err := a.svcs.Services(ns).Get(name)
	if err != nil {
		return nil
	}
	return svc
}

// servedAddrs returns the addresses this node announces for a Service key.
func (a *Agent) servedAddrs(key string) []netip.Addr {
	var out []netip.Addr
	for addr := range a.desired.Of(key) {
		out = append(out, addr)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for addr, told := range a.told {
		if told[key] {
			out = append(out, addr)
		}
	}
	slices.SortFunc(out, func(x, y netip.Addr) int { return x.Compare(y) })
	return out
}

// forwardChanged refreshes a Service's forwarding after one of its
// addresses stopped being announced here.
func (a *Agent) forwardChanged(ctx context.Context, key string) {
	if a.o.Forwarder == nil {
		return
	}
	if svc := a.Service(key); svc != nil && len(a.servedAddrs(key)) > 0 {
		a.forward(key, svc)
		return
	}
	a.unforward(ctx, key)
}

// enqueueAddrs schedules address reconciles.
func (a *Agent) enqueueAddrs(addrs ...[]netip.Addr) {
	for _, list := range addrs {
		for _, ad := range list {
			a.queue.Add(addrKey(ad))
		}
	}
}

// noEndpointsWhy explains a withdrawal for want of endpoints.
const noEndpointsWhy = "no ready endpoint (EndpointSlices); announced again when one is ready, or set " +
	lbsvc.AnnotationAllowWithoutEndpoints + `: "true"`

// splitByEndpoints separates the Services that have a ready endpoint (or
// opted out of the rule) from those that have none.
func (a *Agent) splitByEndpoints(svcs []*v1.Service) (served, idle []*v1.Service) {
	for _, svc := range svcs {
		if strings.EqualFold(strings.TrimSpace(svc.Annotations[lbsvc.AnnotationAllowWithoutEndpoints]), "true") || len(a.readyEndpoints(svc)) > 0 {
			served = append(served, svc)
		} else {
			idle = append(idle, svc)
		}
	}
	return served, idle
}
