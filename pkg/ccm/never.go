package ccm

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"go4.org/netipx"

	"github.com/vip-lb/vip/pkg/ipam"
	"github.com/vip-lb/vip/pkg/lbsvc"
)

// neverSet is the one place that knows which addresses no Service may ever
// get, whatever asks for them (annotation, spec.loadBalancerIP, DHCP, a pool
// pick): the cluster's Service CIDRs (ServiceCIDR objects) and every
// Service's ClusterIPs, node pod CIDRs, Node status addresses, the
// addresses and default gateways agents publish on their heartbeat Leases,
// the control-plane VIP (from the lock Lease, or --control-plane-address),
// and the built-in blocks of ipam.BuiltinForbidden. Quarantined addresses
// (conflicts.go) are checked next to it. It is guarded by LoadBalancer.mu.
type neverSet struct {
	// Counted single addresses, per source, so that two objects naming one
	// address and one of them going away keeps it forbidden.
	node, heartbeat, clusterIP, cpLease map[netip.Addr]int
	// Per object, what it contributed (to undo on update and delete).
	byNode      map[string]nodeContrib
	byLease     map[string][]netip.Addr // heartbeat Lease -> addresses and gateways
	byCPLease   map[string]netip.Addr
	bySvc       map[string][]netip.Addr
	svcCIDRs    map[string][]netip.Prefix
	prefixes    *netipx.IPSet // pod CIDRs and Service CIDRs
	podPrefixes map[netip.Prefix]int
}

type nodeContrib struct {
	addrs []netip.Addr
	pods  []netip.Prefix
}

func newNeverSet() *neverSet {
	return &neverSet{
		node: map[netip.Addr]int{}, heartbeat: map[netip.Addr]int{}, clusterIP: map[netip.Addr]int{}, cpLease: map[netip.Addr]int{},
		byNode: map[string]nodeContrib{}, byLease: map[string][]netip.Addr{}, byCPLease: map[string]netip.Addr{},
		bySvc: map[string][]netip.Addr{}, svcCIDRs: map[string][]netip.Prefix{}, prefixes: &netipx.IPSet{},
		podPrefixes: map[netip.Prefix]int{},
	}
}

// count adds d to m for each address; it reports whether an address left m.
func count(m map[netip.Addr]int, addrs []netip.Addr, d int) (removed bool) {
	for _, a := range addrs {
		m[a] += d
		if m[a] <= 0 {
			delete(m, a)
			removed = true
		}
	}
	return removed
}

// replace swaps an object's old contribution for its new one (new counted
// first, so an address kept never drops to zero) and reports whether an
// address left the set.
func replace(m map[netip.Addr]int, old, cur []netip.Addr) bool {
	count(m, cur, 1)
	return count(m, old, -1)
}

func parseAddrList(s string) []netip.Addr {
	var out []netip.Addr
	for f := range strings.SplitSeq(s, ",") {
		if a, err := netip.ParseAddr(strings.TrimSpace(f)); err == nil && a.Zone() == "" {
			out = append(out, a.Unmap())
		}
		if len(out) >= 256 {
			break
		}
	}
	return out
}

// setNode records a Node (nil: deleted). It reports whether an address may
// have become assignable again.
func (n *neverSet) setNode(name string, node *v1.Node) bool {
	var c nodeContrib
	if node != nil {
		for _, a := range node.Status.Addresses {
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				c.addrs = append(c.addrs, ip.Unmap())
			}
		}
		for _, s := range node.Spec.PodCIDRs {
			if p, err := netip.ParsePrefix(s); err == nil {
				c.pods = append(c.pods, p.Masked())
			}
		}
	}
	old := n.byNode[name]
	if slices.Equal(old.addrs, c.addrs) && slices.Equal(old.pods, c.pods) {
		return false
	}
	if node == nil {
		delete(n.byNode, name)
	} else {
		n.byNode[name] = c
	}
	removed := replace(n.node, old.addrs, c.addrs)
	if !slices.Equal(old.pods, c.pods) {
		for _, p := range c.pods {
			n.podPrefixes[p]++
		}
		for _, p := range old.pods {
			if n.podPrefixes[p]--; n.podPrefixes[p] <= 0 {
				delete(n.podPrefixes, p)
			}
		}
		n.rebuildPrefixes()
		removed = removed || len(old.pods) > 0
	}
	return removed
}

// setServiceCIDR records a ServiceCIDR object (nil: deleted).
func (n *neverSet) setServiceCIDR(name string, sc *networkingv1.ServiceCIDR) bool {
	var cur []netip.Prefix
	if sc != nil {
		for _, s := range sc.Spec.CIDRs {
			if p, err := netip.ParsePrefix(s); err == nil {
				cur = append(cur, p.Masked())
			}
		}
	}
	old := n.svcCIDRs[name]
	if slices.Equal(old, cur) {
		return false
	}
	if sc == nil {
		delete(n.svcCIDRs, name)
	} else {
		n.svcCIDRs[name] = cur
	}
	n.rebuildPrefixes()
	return len(old) > 0
}

func (n *neverSet) rebuildPrefixes() {
	var b netipx.IPSetBuilder
	for p := range n.podPrefixes {
		b.AddPrefix(p)
	}
	for _, ps := range n.svcCIDRs {
		for _, p := range ps {
			b.AddPrefix(p)
		}
	}
	n.prefixes, _ = b.IPSet()
}

// setService records the ClusterIPs of a Service (nil: deleted).
func (n *neverSet) setService(key string, svc *v1.Service) bool {
	var cur []netip.Addr
	if svc != nil {
		for _, s := range svc.Spec.ClusterIPs {
			if a, err := netip.ParseAddr(s); err == nil {
				cur = append(cur, a.Unmap())
			}
		}
	}
	old := n.bySvc[key]
	if slices.Equal(old, cur) {
		return false
	}
	if len(cur) == 0 {
		delete(n.bySvc, key)
	} else {
		n.bySvc[key] = cur
	}
	return replace(n.clusterIP, old, cur)
}

// setLease records what a Lease of the agent namespace publishes (nil:
// deleted): a heartbeat's addresses and gateways, or the control-plane VIP.
func (n *neverSet) setLease(name string, l *coordv1.Lease) bool {
	removed := false
	if strings.HasPrefix(name, lbsvc.HeartbeatLeasePrefix) {
		var cur []netip.Addr
		if l != nil {
			cur = append(parseAddrList(l.Annotations[lbsvc.AnnotationNodeAddresses]),
				parseAddrList(l.Annotations[lbsvc.AnnotationNodeGateways])...)
		}
		if old := n.byLease[name]; !slices.Equal(old, cur) {
			if len(cur) == 0 {
				delete(n.byLease, name)
			} else {
				n.byLease[name] = cur
			}
			removed = replace(n.heartbeat, old, cur)
		}
	}
	var cp netip.Addr
	if l != nil {
		if a, err := netip.ParseAddr(strings.TrimSpace(l.Annotations[lbsvc.AnnotationControlPlaneAddress])); err == nil {
			cp = a.Unmap()
		}
	}
	if old := n.byCPLease[name]; old != cp {
		if cp.IsValid() {
			n.byCPLease[name] = cp
			n.cpLease[cp]++
		} else {
			delete(n.byCPLease, name)
		}
		if old.IsValid() {
			removed = count(n.cpLease, []netip.Addr{old}, -1) || removed
		}
	}
	return removed
}

// why says why a is never assignable, or "".
func (n *neverSet) why(a netip.Addr, override []netip.Addr) string {
	a = a.Unmap()
	switch {
	case slices.Contains(override, a) || n.cpLease[a] > 0:
		return "is the control-plane address"
	case n.node[a] > 0:
		return "is the address of a Node"
	case n.heartbeat[a] > 0:
		return "is an interface address or default gateway of a node"
	case n.clusterIP[a] > 0 || n.inServiceCIDR(a):
		return "is in the cluster's Service CIDR"
	case n.prefixes.Contains(a):
		return "is in a node's pod CIDR"
	case a.IsLoopback():
		return "is a loopback address"
	case a.IsMulticast():
		return "is a multicast address"
	case a.IsLinkLocalUnicast():
		return "is a link-local address"
	case a.IsUnspecified():
		return "is unspecified"
	case ipam.BuiltinForbidden(a):
		return "is never a valid LoadBalancer address"
	}
	return ""
}

func (n *neverSet) inServiceCIDR(a netip.Addr) bool {
	for _, ps := range n.svcCIDRs {
		for _, p := range ps {
			if p.Contains(a) {
				return true
			}
		}
	}
	return false
}

// forbids is the hot path of the allocator's scan.
func (n *neverSet) forbids(a netip.Addr, override []netip.Addr) bool {
	return n.node[a] > 0 || n.heartbeat[a] > 0 || n.clusterIP[a] > 0 || n.cpLease[a] > 0 ||
		slices.Contains(override, a) || n.prefixes.Contains(a)
}

// objOf unwraps a deletion tombstone.
func objOf(o any) any {
	if tomb, ok := o.(cache.DeletedFinalStateUnknown); ok {
		return tomb.Obj
	}
	return o
}

// onAgentLease handles a Lease of the agent namespace (l nil: deleted).
func (lb *LoadBalancer) onAgentLease(name string, l *coordv1.Lease) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	removed := lb.never.setLease(name, l)
	if a, fresh := lb.setConflictLocked(l, name, lb.now()); fresh {
		// The service controller takes it out of their status.
		for _, key := range lb.alloc.Holders(a) {
			lb.resync(key)
		}
	}
	if removed {
		lb.alloc.SetForbidden(lb.forbidden)
	}
}

// startServiceCIDRs watches ServiceCIDR objects when the API server serves
// them (networking.k8s.io/v1, Kubernetes 1.33+); without them the
// ClusterIPs of Services are still refused one by one.
func (lb *LoadBalancer) startServiceCIDRs(client kubernetes.Interface, stop <-chan struct{}) {
	rs, err := client.Discovery().ServerResourcesForGroupVersion("networking.k8s.io/v1")
	if err != nil || !slices.ContainsFunc(rs.APIResources, func(r metav1.APIResource) bool { return r.Name == "servicecidrs" }) {
		klog.InfoS("the API server serves no ServiceCIDR objects; refusing Services' ClusterIPs one by one", "err", err)
		return
	}
	f := informers.NewSharedInformerFactory(client, 0)
	inf := f.Networking().V1().ServiceCIDRs().Informer()
	set := func(o any, deleted bool) {
		sc, ok := objOf(o).(*networkingv1.ServiceCIDR)
		if !ok {
			return
		}
		if deleted {
			sc = nil
		}
		lb.mu.Lock()
		defer lb.mu.Unlock()
		name := ""
		if sc != nil {
			name = sc.Name
		} else if m, ok := objOf(o).(*networkingv1.ServiceCIDR); ok {
			name = m.Name
		}
		if lb.never.setServiceCIDR(name, sc) {
			lb.alloc.SetForbidden(lb.forbidden)
		}
	}
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { set(o, false) },
		UpdateFunc: func(_, o any) { set(o, false) },
		DeleteFunc: func(o any) { set(o, true) },
	})
	// Wait for the Service CIDRs before the first assignment, but not
	// forever: without the servicecidrs rule (an older RBAC) vip-ccm still
	// serves, refusing ClusterIPs one by one, and says why once.
	denied := quietForbidden(inf, "ServiceCIDR objects could not be listed; serving without them (ClusterIPs are still refused)",
		"list/watch on networking.k8s.io servicecidrs")
	started := time.Now()
	var once sync.Once
	lb.synced = append(lb.synced, func() bool {
		if inf.HasSynced() || denied.Load() {
			return true
		}
		if time.Since(started) < serviceCIDRSyncWait {
			return false
		}
		once.Do(func() {
			klog.InfoS("ServiceCIDR objects could not be listed; serving without them (ClusterIPs are still refused); " +
				"grant list/watch on networking.k8s.io servicecidrs as in deploy/ccm/rbac.yaml")
		})
		return true
	})
	f.Start(stop)
}

// serviceCIDRSyncWait bounds the wait for the ServiceCIDR informer.
const serviceCIDRSyncWait = 30 * time.Second

// runTrustQueue ends quarantines on time.
func (lb *LoadBalancer) runTrustQueue(ctx context.Context) {
	go func() {
		<-ctx.Done()
		lb.trustQueue.ShutDown()
	}()
	for {
		key, quit := lb.trustQueue.Get()
		if quit {
			return
		}
		if err := lb.expireConflict(strings.TrimPrefix(key, expireKey)); err != nil {
			klog.FromContext(ctx).Info("ending an address quarantine failed; will retry", "key", key, "err", err)
			lb.trustQueue.AddRateLimited(key)
		} else {
			lb.trustQueue.Forget(key)
		}
		lb.trustQueue.Done(key)
	}
}
