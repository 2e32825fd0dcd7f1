package ccm

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	coordlisters "k8s.io/client-go/listers/coordination/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/cloud-provider/api"
	"k8s.io/klog/v2"

	"github.com/vip-lb/vip/pkg/ipam"
	"github.com/vip-lb/vip/pkg/lbsvc"
)

// Event reasons vip-ccm emits on Services and on the pools ConfigMap.
const (
	ReasonAllocated         = "AddressAllocated"
	ReasonReleased          = "AddressReleased"
	ReasonNoAddress         = "NoAddressAvailable"
	ReasonConflict          = "AddressConflict"
	ReasonForbidden         = "AddressForbidden"
	ReasonOutsidePools      = "AddressOutsidePools"
	ReasonInvalidRequest    = "InvalidAddressRequest"
	ReasonPoolConfigInvalid = "PoolConfigInvalid"
	ReasonPoolConfigMissing = "PoolConfigMissing"
	ReasonWaitingForDHCP    = "WaitingForDHCP"
	// ReasonStaticUnrestricted is given once on a pools ConfigMap without
	// allow-static-outside-pools.
	ReasonStaticUnrestricted = "StaticAddressesUnrestricted"
)

// LoadBalancer implements cloudprovider.LoadBalancer by picking addresses
// from the pools. It keeps no state that cannot be rebuilt from Service
// statuses: after a restart the first call restores every assignment.
type LoadBalancer struct {
	opts    Options
	metrics *metrics
	// unsupported warns about kube-vip annotations vip lacks (unsupported.go).
	unsupported unsupportedWarner

	mu       sync.Mutex // guards everything below and serialises allocation
	alloc    *ipam.Allocator
	pools    *poolState
	cfg      *ipam.Config
	restored bool
	// never is the never-assignable set (never.go), conflicts the
	// quarantined addresses (conflicts.go); trustQueue ends quarantines.
	never      *neverSet
	conflicts  map[netip.Addr]conflict
	trustQueue workqueue.TypedRateLimitingInterface[string]
	now        func() time.Time
	// legacyWarned: the Warning about a legacy ConfigMap was given.
	legacyWarned bool

	client   kubernetes.Interface
	recorder record.EventRecorder
	svcs     corelisters.ServiceLister
	synced   []cache.InformerSynced

	// DHCP Services (dhcp.go).
	leases coordlisters.LeaseLister
	dhcp   map[string]*dhcpState

	// controller is the service controller, the one writer of status: a
	// change no Service update brings (a quarantine, its end, a DHCP
	// record) queues the Services it concerns there (resync).
	controller atomic.Pointer[ServiceController]
}

var _ cloudprovider.LoadBalancer = (*LoadBalancer)(nil)

func newLoadBalancer(opts Options, reg prometheus.Registerer) *LoadBalancer {
	lb := &LoadBalancer{
		opts:      opts,
		metrics:   newMetrics(reg),
		alloc:     ipam.NewAllocator(),
		pools:     newPoolState(),
		never:     newNeverSet(),
		conflicts: map[netip.Addr]conflict{},
		now:       time.Now,
		recorder:  &record.FakeRecorder{},
		trustQueue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](100*time.Millisecond, 10*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "vip-ccm-conflicts"}),
		dhcp: map[string]*dhcpState{},
	}
	lb.alloc.SetForbidden(lb.forbidden)
	lb.metrics.observe(lb)
	return lb
}

// forbidden is called by the allocator with lb.mu held.
func (lb *LoadBalancer) forbidden(a netip.Addr) bool {
	if lb.never.forbids(a, lb.opts.ControlPlaneVIPs) {
		return true
	}
	_, q := lb.quarantinedLocked(a)
	return q
}

func (lb *LoadBalancer) start(client kubernetes.Interface, rec record.EventRecorder, stop <-chan struct{}) {
	lb.client, lb.recorder = client, rec
	f := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithNamespace(lb.opts.ConfigMapNamespace),
		informers.WithTweakListOptions(func(o *metav1ListOptions) {
			o.FieldSelector = "metadata.name=" + lb.opts.ConfigMapName
		}))
	inf := f.Core().V1().ConfigMaps().Informer()
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { lb.onConfigMap(o) },
		UpdateFunc: func(_, o any) { lb.onConfigMap(o) },
		DeleteFunc: func(o any) { lb.onConfigMapDeleted() },
	})
	lb.synced = append(lb.synced, inf.HasSynced)
	f.Start(stop)
	// Leases only in the agent namespace, which tenants cannot write:
	// heartbeats, the control-plane lock, conflict records, DHCP records.
	lf := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(lb.opts.AgentNamespace))
	lb.startDHCP(lf)
	lf.Start(stop)
	lb.startServiceCIDRs(client, stop)
	go lb.runTrustQueue(contextFor(stop))
}

func (lb *LoadBalancer) setInformers(f informers.SharedInformerFactory) {
	si := f.Core().V1().Services()
	lb.svcs = si.Lister()
	_, _ = si.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(o any) {
			lb.clusterIPs(o, false)
			lb.onServiceChanged(o)
		},
		UpdateFunc: func(_, o any) {
			lb.clusterIPs(o, false)
			lb.onServiceChanged(o)
		},
		DeleteFunc: func(o any) {
			o = objOf(o)
			lb.clusterIPs(o, true)
			if svc, ok := o.(*v1.Service); ok {
				lb.release(lbsvc.Key(svc))
			}
		},
	})
	ni := f.Core().V1().Nodes().Informer()
	_, _ = ni.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { lb.nodeAddrs(nil, o) },
		UpdateFunc: func(old, o any) { lb.nodeAddrs(old, o) },
		DeleteFunc: lb.nodeDeleted,
	})
	lb.synced = append(lb.synced, si.Informer().HasSynced, ni.HasSynced)
}

// resync queues the Service key for the service controller, which computes
// its status from the current state. Before the controller exists nothing
// needs queueing: it starts with every Service.
func (lb *LoadBalancer) resync(key string) {
	if c := lb.controller.Load(); c != nil {
		c.queue.Add(key)
	}
}

func (lb *LoadBalancer) nodeAddrs(_, cur any) {
	cur = objOf(cur)
	n, ok := cur.(*v1.Node)
	if !ok {
		return
	}
	lb.nodeChanged(n.Name, n)
}

func (lb *LoadBalancer) nodeDeleted(o any) {
	if n, ok := objOf(o).(*v1.Node); ok {
		lb.nodeChanged(n.Name, nil)
	}
}

func (lb *LoadBalancer) nodeChanged(name string, n *v1.Node) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	if lb.never.setNode(name, n) {
		// An address that is no longer a node's may be handed out again:
		// make the allocator search the pools from the start once more.
		lb.alloc.SetForbidden(lb.forbidden)
	}
}

// clusterIPs keeps the ClusterIPs of every Service never assignable.
func (lb *LoadBalancer) clusterIPs(o any, deleted bool) {
	svc, ok := o.(*v1.Service)
	if !ok {
		return
	}
	if deleted {
		svc = &v1.Service{ObjectMeta: svc.ObjectMeta}
	}
	lb.mu.Lock()
	defer lb.mu.Unlock()
	if lb.never.setService(lbsvc.Key(svc), svc) {
		lb.alloc.SetForbidden(lb.forbidden)
	}
}

func (lb *LoadBalancer) hasSynced() bool {
	if lb.svcs == nil || len(lb.synced) == 0 {
		return false
	}
	for _, s := range lb.synced {
		if !s() {
			return false
		}
	}
	return true
}

// restoreLocked rebuilds the allocator from the statuses of the Services
// vip serves. It runs once, on the first call after the informers synced.
func (lb *LoadBalancer) restoreLocked() error {
	if lb.restored {
		return nil
	}
	list, err := lb.svcs.List(labelsEverything())
	if err != nil {
		return fmt.Errorf("listing Services to restore assignments: %w", err)
	}
	n, foreign := 0, 0
	for _, svc := range list {
		if !lbsvc.Wants(svc, lb.opts.Class) {
			// Not ours (another class, ignored, or served by vip in another
			// mode before): its addresses are still taken.
			if addrs := foreignAddrs(svc); len(addrs) > 0 {
				lb.alloc.Restore(ipamRequest(svc, nil, nil), addrs, false)
				foreign++
			}
			continue
		}
		addrs := lbsvc.IngressIPs(svc)
		if len(addrs) == 0 {
			continue
		}
		lb.alloc.Restore(ipamRequest(svc, nil, nil), addrs, lb.cfg != nil && lb.cfg.Shareable(svc.Namespace))
		n++
	}
	lb.restored = true
	klog.InfoS("restored address assignments from Service statuses", "services", n, "notServed", foreign)
	return nil
}

// foreignAddrs returns the usable addresses in the status of a Service vip
// does not serve.
func foreignAddrs(svc *v1.Service) []netip.Addr {
	var out []netip.Addr
	for _, a := range lbsvc.IngressIPs(svc) {
		if !a.IsUnspecified() {
			out = append(out, a)
		}
	}
	return out
}

// onServiceChanged keeps the addresses of Services vip does not serve in
// step with their status, so that vip never hands them out. Services vip
// serves are recorded by EnsureLoadBalancer instead.
func (lb *LoadBalancer) onServiceChanged(o any) {
	svc, ok := o.(*v1.Service)
	if !ok || lbsvc.Wants(svc, lb.opts.Class) {
		return
	}
	addrs := foreignAddrs(svc)
	key := lbsvc.Key(svc)
	lb.mu.Lock()
	defer lb.mu.Unlock()
	if !lb.restored {
		return // the restore reads the informer cache, which has this change
	}
	held := lb.alloc.Assigned(key)
	if len(held) == len(addrs) && sameAddrs(held, addrs) {
		return
	}
	lb.alloc.Restore(ipamRequest(svc, nil, nil), addrs, false)
}

func sameAddrs(a, b []netip.Addr) bool {
	for _, x := range a {
		found := false
		for _, y := range b {
			found = found || x == y
		}
		if !found {
			return false
		}
	}
	return true
}

// maybeRestoreLocked restores the assignments once the informers synced,
// so that a release or a lookup before the first EnsureLoadBalancer after a
// restart sees them too.
func (lb *LoadBalancer) maybeRestoreLocked() {
	if lb.restored || !lb.hasSynced() {
		return
	}
	if err := lb.restoreLocked(); err != nil {
		klog.InfoS("restoring address assignments failed; will retry", "err", err)
	}
}

// GetLoadBalancerName returns the Service's own name; vip creates no
// external objects.
func (lb *LoadBalancer) GetLoadBalancerName(_ context.Context, _ string, svc *v1.Service) string {
	return cloudprovider.DefaultLoadBalancerName(svc)
}

// GetLoadBalancer reports the addresses held for svc.
func (lb *LoadBalancer) GetLoadBalancer(_ context.Context, _ string, svc *v1.Service) (*v1.LoadBalancerStatus, bool, error) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	lb.maybeRestoreLocked()
	addrs := lb.alloc.Assigned(lbsvc.Key(svc))
	if len(addrs) == 0 {
		return nil, false, nil
	}
	return statusFor(addrs), true, nil
}

// EnsureLoadBalancer returns the addresses of svc, assigning them on first
// call. It never modifies svc.
func (lb *LoadBalancer) EnsureLoadBalancer(ctx context.Context, _ string, svc *v1.Service, _ []*v1.Node) (*v1.LoadBalancerStatus, error) {
	if !lbsvc.Wants(svc, lb.opts.Class) {
		return nil, cloudprovider.ImplementedElsewhere
	}
	if !lb.hasSynced() {
		return nil, api.NewRetryError("waiting for the Service, Node and pools informers to sync", time.Second)
	}
	start := time.Now()
	status, err := lb.ensure(ctx, svc)
	lb.metrics.ensureDone(start, err)
	return status, err
}

func (lb *LoadBalancer) ensure(ctx context.Context, svc *v1.Service) (*v1.LoadBalancerStatus, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("ensuring %s: %w", lbsvc.Key(svc), err)
	}
	key := lbsvc.Key(svc)
	logger := klog.LoggerWithValues(klog.FromContext(ctx), "service", key)
	lb.unsupported.check(lb.recorder, svc)
	lb.mu.Lock()
	err := lb.restoreLocked()
	if err == nil {
		lb.dropQuarantinedLocked(svc)
	}
	lb.mu.Unlock()
	if err != nil {
		return nil, err
	}
	req, err := lbsvc.Requested(svc)
	if err != nil {
		lb.recorder.Event(svc, v1.EventTypeWarning, ReasonInvalidRequest, err.Error())
		logger.Info("invalid address request", "err", err)
		return nil, api.NewRetryError(err.Error(), lb.opts.RetryAfter)
	}
	lb.mu.Lock()
	pools := lb.cfg
	lb.mu.Unlock()
	if req.DHCP && !pools.DHCPAllowed(svc.Namespace) {
		msg := fmt.Sprintf("address 0.0.0.0 (an address by DHCP) is not enabled for namespace %q: an admin sets %s%s: \"true\" in the pools ConfigMap",
			svc.Namespace, ipam.KeyPrefixAllowDHCP, svc.Namespace)
		lb.recorder.Event(svc, v1.EventTypeWarning, ReasonForbidden, msg)
		logger.Info("no address assigned", "reason", ReasonForbidden, "err", msg)
		lb.metrics.failures.WithLabelValues(ReasonForbidden).Inc()
		return nil, api.NewRetryError(msg, lb.opts.RetryAfter)
	}
	if lbsvc.UsesDHCP(svc, pools) {
		return lb.dhcpStatus(svc)
	}
	fams, required := lbsvc.Families(svc)
	lb.mu.Lock()
	defer lb.mu.Unlock()
	if err := lb.restoreLocked(); err != nil {
		return nil, err
	}
	had := len(lb.alloc.Assigned(key)) > 0
	addrs, err := lb.alloc.Assign(ipamRequest(svc, fams, req.Addrs))
	if err != nil && !required && len(fams) > 1 && len(req.Addrs) == 0 {
		// PreferDualStack: one family is better than none.
		addrs, err = lb.alloc.Assign(ipamRequest(svc, fams[:1], nil))
	}
	if err != nil {
		reason := reasonFor(err)
		msg := err.Error()
		if reason == ReasonForbidden {
			msg += lb.whyForbiddenLocked(req.Addrs)
		}
		if perr := lb.pools.errorsFor(svc.Namespace); perr != "" && reason == ReasonNoAddress {
			msg += "; pools ConfigMap has invalid entries: " + perr
		}
		if !lb.pools.present {
			reason = ReasonPoolConfigMissing
			msg = fmt.Sprintf("pools ConfigMap %s/%s not found: %v", lb.opts.ConfigMapNamespace, lb.opts.ConfigMapName, err)
		}
		lb.recorder.Event(svc, v1.EventTypeWarning, reason, msg)
		logger.Info("no address assigned", "reason", reason, "err", err)
		lb.metrics.failures.WithLabelValues(reason).Inc()
		return nil, api.NewRetryError(msg, lb.opts.RetryAfter)
	}
	for _, a := range addrs {
		if a.IsUnspecified() {
			// The pool is the 0.0.0.0/32 DHCP marker: the agent obtains
			// the address. dhcpStatus takes lb.mu itself.
			lb.mu.Unlock()
			defer lb.mu.Lock()
			return lb.dhcpStatus(svc)
		}
	}
	if !had {
		lb.recorder.Eventf(svc, v1.EventTypeNormal, ReasonAllocated, "Assigned %s", joinAddrs(addrs))
		logger.V(2).Info("assigned addresses", "vip", joinAddrs(addrs))
		lb.metrics.allocations.Inc()
	}
	return statusFor(addrs), nil
}

// UpdateLoadBalancer has nothing to do: the addresses do not depend on the
// node set.
func (lb *LoadBalancer) UpdateLoadBalancer(context.Context, string, *v1.Service, []*v1.Node) error {
	return nil
}

// EnsureLoadBalancerDeleted releases the addresses of svc.
func (lb *LoadBalancer) EnsureLoadBalancerDeleted(_ context.Context, _ string, svc *v1.Service) error {
	lb.unsupported.forget(lbsvc.Key(svc))
	if lb.release(lbsvc.Key(svc)) {
		lb.recorder.Event(svc, v1.EventTypeNormal, ReasonReleased, "Released its addresses")
	}
	return nil
}

func (lb *LoadBalancer) release(key string) bool {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	lb.maybeRestoreLocked()
	lb.forgetDHCPLocked(key)
	if len(lb.alloc.Assigned(key)) == 0 {
		return false
	}
	lb.alloc.Release(key)
	return true
}

// whyForbiddenLocked explains which of the requested addresses is refused
// and why.
func (lb *LoadBalancer) whyForbiddenLocked(addrs []netip.Addr) string {
	var why []string
	for _, a := range addrs {
		if w := lb.never.why(a, lb.opts.ControlPlaneVIPs); w != "" {
			why = append(why, a.String()+" "+w)
		} else if c, ok := lb.quarantinedLocked(a.Unmap()); ok {
			why = append(why, fmt.Sprintf("%s is answered by MAC %s, which is not a vip node (refused until %s)",
				a, c.mac, c.until.UTC().Format(time.RFC3339)))
		}
	}
	if len(why) == 0 {
		return ""
	}
	return " (" + strings.Join(why, "; ") + ")"
}

func reasonFor(err error) string {
	switch {
	case errors.Is(err, ipam.ErrConflict):
		return ReasonConflict
	case errors.Is(err, ipam.ErrForbidden), errors.Is(err, ipam.ErrOtherPool):
		return ReasonForbidden
	case errors.Is(err, ipam.ErrOutsidePools):
		return ReasonOutsidePools
	default:
		return ReasonNoAddress
	}
}

func statusFor(addrs []netip.Addr) *v1.LoadBalancerStatus {
	st := &v1.LoadBalancerStatus{}
	mode := v1.LoadBalancerIPModeVIP
	for _, a := range addrs {
		st.Ingress = append(st.Ingress, v1.LoadBalancerIngress{IP: a.String(), IPMode: &mode})
	}
	return st
}

func joinAddrs(addrs []netip.Addr) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}
