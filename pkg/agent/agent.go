package agent

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/go-logr/logr"
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/vip-lb/vip/internal/listwatch"
	"github.com/vip-lb/vip/pkg/announce"
	"github.com/vip-lb/vip/pkg/ipam"
	"github.com/vip-lb/vip/pkg/lbsvc"
)

// Agent advertises the addresses of the Services this node should serve.
type Agent struct {
	o       Options
	log     logr.Logger
	rec     record.EventRecorder
	metrics *metrics

	factory   informers.SharedInformerFactory
	cmFactory informers.SharedInformerFactory
	svcs      corelisters.ServiceLister
	svcIndex  cache.Indexer // Services by status address (ingressIndex)
	slices    discoverylisters.EndpointSliceLister
	nodes     corelisters.NodeLister
	synced    []cache.InformerSynced
	queue     workqueue.TypedRateLimitingInterface[string]

	// desired is what this node announces, declared by owner: an address
	// key (@<addr>) for addresses elected per address, a Service key for
	// Services whose address comes from the AddressSource; the announcer
	// converges to it.
	desired *announce.Desired

	mu       sync.Mutex
	told     map[netip.Addr]map[string]bool // address -> Services told it is announced here
	svcAddrs map[string][]netip.Addr        // Service key -> status addresses last seen
	leases   map[string]string              // sourced Service key -> its Lease name
	holders  map[string]string              // address or sourced Service key -> last known holder
	legacy   map[string]bool                // Service keys whose old per-Service Lease was cleaned up
	// legacyForbidden: RBAC does not let the agent read Leases outside its
	// namespace, so old per-Service Leases are not looked for.
	legacyForbidden bool
	// conflicts are the addresses another host answered the probe for, with
	// its MAC; probed again every conflictRetry.
	conflicts map[netip.Addr]string
	unprobed  map[netip.Addr]bool      // acquired fresh, not probed yet
	unmarked  map[netip.Addr]bool      // announced after a probe, mark not written yet
	handing   map[netip.Addr]time.Time // handed off while bound here -> end of the grace (handoff.go)
	probing   *probes                  // probes running beside the workers (probing.go)
	ifaces    *ipam.Config             // interface-<ns> settings
	consent   consent                  // interface-* (tenant.go)
	warned    map[string]string        // one-time Warnings (tenant.go)
	taken     chan pendingWithdrawal   // addresses to withdraw or bind again at once (taken.go)
	fencedOff map[netip.Addr]string    // withdrawn at once by a fence -> interface asked (taken.go)
}

// New builds an agent; Run starts it.
func New(o Options) (*Agent, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	a := &Agent{
		o:        o,
		log:      o.Logger.WithValues("node", o.NodeName),
		rec:      o.Recorder,
		metrics:  newMetrics(o.Registerer),
		desired:  announce.NewDesired(o.Announcer),
		told:     map[netip.Addr]map[string]bool{},
		svcAddrs: map[string][]netip.Addr{},
		leases:   map[string]string{},
		holders:  map[string]string{},
		legacy:   map[string]bool{},

		conflicts: map[netip.Addr]string{},
		unprobed:  map[netip.Addr]bool{},
		unmarked:  map[netip.Addr]bool{},
		handing:   map[netip.Addr]time.Time{},
		probing:   newProbes(),
		taken:     make(chan pendingWithdrawal, takenBuffer),
		fencedOff: map[netip.Addr]string{},

		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](20*time.Millisecond, 10*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "vip-agent-services", Clock: o.Clock}),
	}
	if a.rec == nil {
		a.rec = &record.FakeRecorder{}
	}
	a.factory = informers.NewSharedInformerFactoryWithOptions(o.Client, o.ResyncPeriod, informers.WithNamespace(o.ServicesNamespace),
		informers.WithTransform(listwatch.Slim))
	si := a.factory.Core().V1().Services()
	es := a.factory.Discovery().V1().EndpointSlices()
	ni := a.factory.Core().V1().Nodes()
	a.svcs, a.slices, a.nodes = si.Lister(), es.Lister(), ni.Lister()
	if err := si.Informer().AddIndexers(cache.Indexers{ingressIndex: indexByIngress}); err != nil {
		return nil, fmt.Errorf("indexing Services: %w", err)
	}
	a.svcIndex = si.Informer().GetIndexer()
	_, _ = si.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    a.enqueueObj,
		UpdateFunc: func(_, o any) { a.enqueueObj(o) },
		DeleteFunc: a.enqueueObj,
	})
	_, _ = es.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    a.enqueueSlice,
		UpdateFunc: func(_, o any) { a.enqueueSlice(o) },
		DeleteFunc: a.enqueueSlice,
	})
	_, _ = ni.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(old, cur any) {
			on, ok1 := old.(*v1.Node)
			cn, ok2 := cur.(*v1.Node)
			if ok1 && ok2 && excluded(on) != excluded(cn) {
				a.EnqueueAll()
			}
		},
		AddFunc:    func(any) { a.EnqueueAll() },
		DeleteFunc: func(any) { a.EnqueueAll() },
	})
	a.cmFactory = informers.NewSharedInformerFactoryWithOptions(o.Client, 0,
		informers.WithNamespace(o.ConfigMapNamespace), informers.WithTransform(listwatch.Slim),
		informers.WithTweakListOptions(func(lo *metav1ListOptions) { lo.FieldSelector = "metadata.name=" + o.ConfigMapName }))
	ci := a.cmFactory.Core().V1().ConfigMaps().Informer()
	_, _ = ci.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    a.onConfigMap,
		UpdateFunc: func(_, o any) { a.onConfigMap(o) },
		DeleteFunc: func(any) { a.setInterfaces(nil) },
	})
	watchUnassigned(a, si.Informer()) // unassigned.go: Warning NoAddressAssigned after 30 s without status
	perm := newPermissionWatch(a)     // permissions.go: a missing RBAC rule is named, an optional one does not stall
	a.synced = []cache.InformerSynced{perm.track("services", si.Informer()), perm.track("endpointslices", es.Informer()),
		perm.track("nodes", ni.Informer()), perm.track("configmaps", ci)}
	return a, nil
}

// Run starts informers and workers and blocks until ctx ends. The caller
// then stops gracefully: WithdrawSourced, BeginStop, the Elector's
// Shutdown, AwaitSuccessors, WithdrawEverything (handoff.go).
func (a *Agent) Run(ctx context.Context) error {
	a.factory.Start(ctx.Done())
	a.cmFactory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), a.synced...) {
		return fmt.Errorf("waiting for informers to sync: %w", ctx.Err())
	}
	a.log.Info("informers synced; reconciling Services", "mode", a.o.Mode, "workers", a.o.Workers)
	go a.watchIPVS(ctx)         // ipvs.go: kube-ipvs0 holding LoadBalancer addresses without strict ARP is reported
	go a.runFastWithdrawal(ctx) // taken.go: addresses another node took, or all when fenced, go at once
	var wg sync.WaitGroup
	for i := 0; i < a.o.Workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wait.UntilWithContext(ctx, a.worker, time.Second)
		}()
	}
	<-ctx.Done()
	a.queue.ShutDown()
	wg.Wait()
	a.probing.stop()
	return nil
}

// Synced reports whether the informers have synced (readiness).
func (a *Agent) Synced() bool {
	for _, s := range a.synced {
		if !s() {
			return false
		}
	}
	return true
}

// Enqueue schedules a reconcile of the Service key.
func (a *Agent) Enqueue(key string) { a.queue.Add(key) }

// EnqueueAll schedules every known Service.
func (a *Agent) EnqueueAll() {
	list, err := a.svcs.List(labels.Everything())
	if err != nil {
		return
	}
	for _, s := range list {
		a.queue.Add(lbsvc.Key(s))
	}
	for _, k := range a.desired.Owners() {
		a.queue.Add(k)
	}
}

// OnNodeChange re-reconciles after a node's liveness changed: the Services
// that node held first, so a takeover is not queued behind the others.
func (a *Agent) OnNodeChange(node string, alive bool) {
	if node == a.o.NodeName && a.o.Mode == ModeARP {
		a.fenceChanged(alive)
	}
	a.mu.Lock()
	var first []string
	for k, h := range a.holders {
		if h == node {
			first = append(first, k)
		}
	}
	a.mu.Unlock()
	for _, k := range first {
		a.queue.Add(k)
	}
	a.EnqueueAll()
}

// OnServiceLeaseChange maps a Lease event of the agent namespace back to
// its address or sourced Service.
func (a *Agent) OnServiceLeaseChange(namespace, leaseName string) {
	if namespace != a.o.Namespace {
		return
	}
	if addr, ok := lbsvc.AddressFromLeaseName(leaseName); ok {
		a.withdrawSoon(addr)
		a.queue.Add(addrKey(addr))
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, l := range a.leases {
		if l == leaseName {
			a.queue.Add(k)
			return
		}
	}
}

func (a *Agent) enqueueObj(o any) {
	if tomb, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = tomb.Obj
	}
	if svc, ok := o.(*v1.Service); ok {
		a.queue.Add(lbsvc.Key(svc))
	}
}

func (a *Agent) enqueueSlice(o any) {
	if tomb, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = tomb.Obj
	}
	if es, ok := o.(*discoveryv1.EndpointSlice); ok {
		if name := es.Labels[discoveryv1.LabelServiceName]; name != "" {
			a.queue.Add(es.Namespace + "/" + name)
		}
	}
}

func (a *Agent) onConfigMap(o any) {
	cm, ok := o.(*v1.ConfigMap)
	if !ok {
		return
	}
	cfg, errs := ipam.ParseConfig(cm.Data)
	for _, err := range errs {
		a.log.V(1).Info("pools ConfigMap entry ignored", "err", err)
	}
	a.setConsent(cm.Data)
	a.setPools(cm.Data)
	a.setInterfaces(cfg)
}

func (a *Agent) setInterfaces(cfg *ipam.Config) {
	a.mu.Lock()
	a.ifaces = cfg
	a.mu.Unlock()
	a.EnqueueAll()
}

func (a *Agent) worker(ctx context.Context) {
	for {
		key, quit := a.queue.Get()
		if quit {
			return
		}
		start := a.o.Clock.Now()
		err := a.sync(ctx, key)
		a.metrics.reconciled(a.o.Clock.Since(start), err)
		if err != nil {
			a.log.V(1).Info("reconcile failed; retrying", "service", key, "err", err)
			a.queue.AddRateLimited(key)
		} else {
			a.queue.Forget(key)
		}
		a.queue.Done(key)
	}
}
