package agent

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"

	"github.com/vip-lb/vip/pkg/announce"
	"github.com/vip-lb/vip/pkg/lbsvc"
)

type metav1ListOptions = metav1.ListOptions

// Event reasons the agent emits on Services.
const (
	ReasonAnnouncing   = "Announcing"
	ReasonWithdrawn    = "Withdrawn"
	ReasonAnnounceFail = "AnnounceFailed"
	// ReasonNoReadyEndpoints: withdrawn while the Service has no ready
	// endpoint.
	ReasonNoReadyEndpoints = "NoReadyEndpoints"
)

// labelExcludeLB is the well-known label that keeps a node out of load
// balancing.
const labelExcludeLB = "node.kubernetes.io/exclude-from-external-load-balancers"

func (a *Agent) sync(ctx context.Context, key string) error {
	if addr, ok := parseAddrKey(key); ok {
		return a.syncAddr(ctx, addr)
	}
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	svc, err := a.svcs.Services(ns).Get(name)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	a.mu.Lock()
	prev := a.svcAddrs[key]
	a.mu.Unlock()
	if why := goneReason(svc, err, a.o.Class); why != "" {
		a.setSvcAddrs(key, nil)
		a.enqueueAddrs(prev)
		a.mu.Lock()
		delete(a.legacy, key)
		a.mu.Unlock()
		a.withdrawAll(ctx, key, svc, why)
		a.release(key, true)
		return a.forgetLease(ctx, key)
	}
	if a.sourced(svc) {
		a.setSvcAddrs(key, nil)
		a.enqueueAddrs(prev)
		return a.syncSourced(ctx, key, svc)
	}
	if a.sourceLeaseKnown(key) {
		a.withdrawAll(ctx, key, svc, fmt.Sprintf("the Service no longer obtains its address by %s", a.o.Source))
		a.release(key, true)
		if err := a.forgetLease(ctx, key); err != nil {
			return err
		}
	}
	addrs := announceable(lbsvc.IngressIPs(svc))
	a.setSvcAddrs(key, addrs)
	a.enqueueAddrs(prev, addrs)
	return nil
}

// setSvcAddrs remembers the addresses a Service had, so that the addresses
// it leaves are looked at again.
func (a *Agent) setSvcAddrs(key string, addrs []netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(addrs) == 0 {
		delete(a.svcAddrs, key)
		return
	}
	a.svcAddrs[key] = addrs
}

// goneReason says why the Service (svc, err from the lister) must be
// withdrawn and forgotten, or "" while it is still to be served. A Service
// being deleted goes at once: vip-ccm frees its address when deletion starts,
// and a terminating Service must not stay announced while vip-ccm is down.
func goneReason(svc *v1.Service, err error, class lbsvc.ClassRule) string {
	switch {
	case apierrors.IsNotFound(err), svc == nil:
		return "the Service was deleted"
	case svc.DeletionTimestamp != nil:
		return "the Service is being deleted"
	case !lbsvc.Wants(svc, class):
		return "the Service no longer wants a load balancer"
	}
	return ""
}

// announceable drops 0.0.0.0 and other addresses that cannot be a VIP.
func announceable(in []netip.Addr) []netip.Addr {
	out := in[:0:0]
	for _, a := range in {
		if a.IsValid() && !a.IsUnspecified() && !a.IsLoopback() && !a.IsMulticast() && !a.IsLinkLocalUnicast() {
			out = append(out, a)
		}
	}
	return out
}

// candidates are the nodes that may serve svc: alive agents (layer 2) or
// this node (BGP), minus excluded nodes and, with externalTrafficPolicy
// Local, nodes without a ready endpoint.
func (a *Agent) candidates(svc *v1.Service) []string {
	var nodes []string
	if a.o.Mode == ModeARP {
		nodes = a.o.Elector.AliveNodes()
	} else {
		nodes = []string{a.o.NodeName}
	}
	var local map[string]bool
	if svc.Spec.ExternalTrafficPolicy == v1.ServiceExternalTrafficPolicyLocal {
		local = a.readyNodes(svc)
	}
	out := nodes[:0:0]
	for _, n := range nodes {
		if node, err := a.nodes.Get(n); err == nil && excluded(node) {
			continue
		}
		if local != nil && !local[n] {
			continue
		}
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func excluded(n *v1.Node) bool {
	_, ok := n.Labels[labelExcludeLB]
	return ok
}

// readyNodes returns the nodes with at least one ready endpoint of svc.
func (a *Agent) readyNodes(svc *v1.Service) map[string]bool {
	out := map[string]bool{}
	for _, ep := range a.readyEndpoints(svc) {
		if ep.NodeName != nil {
			out[*ep.NodeName] = true
		}
	}
	return out
}

// readyEndpoints lists svc's ready endpoints (ready unset counts as ready,
// as the EndpointSlice API says).
func (a *Agent) readyEndpoints(svc *v1.Service) []discoveryv1.Endpoint {
	sel := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: svc.Name})
	list, err := a.slices.EndpointSlices(svc.Namespace).List(sel)
	if err != nil {
		return nil
	}
	var out []discoveryv1.Endpoint
	for _, es := range list {
		for _, ep := range es.Endpoints {
			if ep.Conditions.Ready == nil || *ep.Conditions.Ready {
				out = append(out, ep)
			}
		}
	}
	return out
}

// announceOn announces addrs on iface for key and withdraws the key's
// other addresses.
func (a *Agent) announceOn(ctx context.Context, key string, svc *v1.Service, addrs []netip.Addr, iface, reason string, changed bool) error {
	want := make(map[netip.Addr]string, len(addrs))
	for _, addr := range addrs {
		want[addr] = iface
	}
	ch, err := a.declare(ctx, key, want)
	if len(ch.Announced) > 0 {
		fresh := addrStrings(ch.Announced)
		how := "ARP"
		if a.o.Mode == ModeBGP {
			how = "BGP"
		} else if strings.Contains(fresh, ":") {
			how = "ARP/NDP"
		}
		msg := fmt.Sprintf("Announcing %s via %s from %s", fresh, how, a.o.NodeName)
		if changed && reason != "" {
			msg += " (" + reason + ")"
		}
		a.rec.Event(svc, v1.EventTypeNormal, ReasonAnnouncing, msg)
		a.log.Info("announcing", "service", key, "vip", fresh, "iface", iface, "reason", reason)
	}
	a.forward(key, svc)
	if err != nil {
		a.rec.Event(svc, v1.EventTypeWarning, ReasonAnnounceFail, err.Error())
		return err
	}
	return nil
}

// declare sets what this node announces for owner (nil: nothing), logs the
// withdrawals that failed and updates the held gauge.
func (a *Agent) declare(ctx context.Context, owner string, want map[netip.Addr]string) (announce.Change, error) {
	ch, err := a.desired.Set(ctx, owner, want)
	if ch.WithdrawErr != nil {
		a.log.Error(ch.WithdrawErr, "withdrawing address", "owner", owner)
	}
	if len(ch.Announced) > 0 || len(ch.Withdrawn) > 0 {
		a.metrics.setHeld(a.desired.Count())
	}
	return ch, err
}

func addrStrings(addrs []netip.Addr) string {
	s := make([]string, len(addrs))
	for i, ad := range addrs {
		s[i] = ad.String()
	}
	return strings.Join(s, ",")
}

// withdrawAll removes every address announced for key; svc may be nil.
func (a *Agent) withdrawAll(ctx context.Context, key string, svc *v1.Service, why string) {
	a.unforward(ctx, key)
	ch, _ := a.declare(ctx, key, nil)
	if len(ch.Withdrawn) == 0 {
		return
	}
	s := addrStrings(ch.Withdrawn)
	a.log.Info("withdrawn", "service", key, "vip", s, "reason", why)
	if svc != nil {
		a.rec.Eventf(svc, v1.EventTypeNormal, ReasonWithdrawn, "Withdrew %s from %s: %s", s, a.o.NodeName, why)
	}
}

// forgetLease deletes the Lease of a sourced Service that is gone or no
// longer obtains its address from the AddressSource: the holder does it, or anyone if the
// holder is dead.
func (a *Agent) forgetLease(ctx context.Context, key string) error {
	a.mu.Lock()
	lease, ok := a.leases[key]
	delete(a.leases, key)
	delete(a.holders, key)
	a.mu.Unlock()
	if a.o.Mode != ModeARP || !ok {
		return nil
	}
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

// WithdrawEverything removes every announced address (graceful stop: this
// runs before the Leases are handed off, so no address is ever announced
// from two nodes).
func (a *Agent) WithdrawEverything(ctx context.Context) {
	a.WithdrawSourced(ctx)
	for _, addr := range a.boundAddrs() {
		a.withdrawAddr(ctx, addr, "agent stopping")
	}
}

// WithdrawSourced withdraws the addresses of Services that obtain them from
// the AddressSource (a MAC of their own: never on two nodes, so they go
// before the hand-off).
func (a *Agent) WithdrawSourced(ctx context.Context) {
	for _, k := range a.desired.Owners() {
		if _, ok := parseAddrKey(k); !ok {
			a.withdrawAll(ctx, k, a.Service(k), "agent stopping")
		}
	}
}

// elect asks the elector who owns lease (for subject, an address or a
// sourced Service's key) among cands, requeues key when the decision says so, and
// records the holder for key.
func (a *Agent) elect(ctx context.Context, key, lease, subject string, cands []string) (Decision, error) {
	d, err := a.o.Elector.Ensure(ctx, a.o.Namespace, lease, subject, cands)
	if err != nil { // counted by the elector (vip_agent_election_errors_total{op})
		return d, fmt.Errorf("electing owner of %s: %w", subject, err)
	}
	if d.RequeueAfter > 0 {
		a.queue.AddAfter(key, d.RequeueAfter)
	}
	a.mu.Lock()
	a.holders[key] = d.Holder
	a.mu.Unlock()
	return d, nil
}
