package election

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	coordv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coordinformers "k8s.io/client-go/informers/coordination/v1"
	coordclient "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/vip-lb/vip/internal/listwatch"
)

// holderIndex indexes Service Leases by holderIdentity.
const holderIndex = "holder"

// overlayTTL bounds how long a Lease this node wrote is preferred over an
// informer cache that has not caught up with it yet.
const overlayTTL = 30 * time.Second

// Elector runs this node's heartbeat, watches every node's heartbeat and
// decides the ownership of Service Leases. One Elector serves an agent; its
// methods are safe for concurrent use.
type Elector struct {
	o        Options
	log      logr.Logger
	self     string
	metrics  *metrics
	informer cache.SharedIndexInformer
	// store is the informer cache overlaid with this node's own writes, so a
	// decision right after a write does not act on the older cached copy.
	store   cache.MutationCache
	handler cache.ResourceEventHandlerRegistration
	synced  func() bool // the handler has seen the initial list
	running atomic.Bool

	// evalMu serialises liveness evaluation and the callbacks it makes, so
	// the agent sees transitions in order.
	evalMu sync.Mutex

	mu       sync.Mutex
	nodes    map[string]*nodeState // heartbeats seen, by node (this one included)
	selfSeen time.Time             // when the informer last delivered a change of our own heartbeat
	epoch    time.Time             // our watch resumed after a gap: peers are judged from here
	reported bool                  // this node's liveness as last told to OnNodeChange
	wants    map[string]want       // by lease key: the last Ensure's arguments, for Shutdown
	reasons  map[string]string     // by lease key: why a pending hand-off was decided
	// outgoing: by lease key, the alive holder that is no longer a
	// candidate and since when this node has waited for it to hand off.
	outgoing map[string]outgoing
	hb       heartbeat
	// published are annotations put on the heartbeat (Publish).
	published map[string]string
	stopping  bool
	// kick asks for an evaluation (link mode); linkMembers is the
	// membership last given to the link.
	kick        chan struct{}
	linkMembers map[string]netip.AddrPort
	linkRetryAt time.Time // link mode: no renewal before this after a failure
	silence     silence   // link mode: whether the link is silent for every node (silent.go)
	hbStop      context.CancelFunc
	hbDone      chan struct{}
}

// outgoing is an alive holder this node waits for to hand a Lease off.
type outgoing struct {
	holder string
	since  time.Time
}

// want is what the last Ensure of a Lease said about its Service.
type want struct {
	serviceKey string
	candidates []string
}

// LeaseRef names a Service Lease.
type LeaseRef struct {
	Namespace, Name string
}

// New validates o and builds an Elector; Run starts it.
func New(o Options) (*Elector, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	age := newAgeCollector()
	m, err := newMetrics(o.Registerer, age)
	if err != nil {
		return nil, err
	}
	e := &Elector{
		o:        o,
		log:      o.Logger.WithName("election"),
		self:     o.NodeName,
		metrics:  m,
		nodes:    map[string]*nodeState{},
		wants:    map[string]want{},
		reasons:  map[string]string{},
		outgoing: map[string]outgoing{},
		kick:     make(chan struct{}, 1),
	}
	age.e.Store(e)
	// Every vip Lease lives in the agent's namespace: the agent needs no
	// read access elsewhere, and tenants cannot plant Leases it trusts.
	e.informer = coordinformers.NewFilteredLeaseInformer(o.Client, o.Namespace, 0,
		cache.Indexers{holderIndex: indexByHolder},
		func(lo *metav1.ListOptions) { lo.LabelSelector = LabelManagedBy + "=" + ManagedByValue })
	if err := e.informer.SetTransform(listwatch.Slim); err != nil {
		return nil, fmt.Errorf("slimming cached leases: %w", err)
	}
	e.store = cache.NewIntegerResourceVersionMutationCacheWithOptions(e.log, e.informer.GetIndexer(),
		cache.MutationCacheOptions{Indexer: e.informer.GetIndexer(), TTL: overlayTTL, IncludeAdds: true, MaxCacheSize: 1000})
	e.handler, err = e.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { e.onUpsert(nil, obj) },
		UpdateFunc: e.onUpsert,
		DeleteFunc: e.onDelete,
	})
	if err != nil {
		return nil, fmt.Errorf("watching leases: %w", err)
	}
	e.synced = e.handler.HasSynced
	e.wrapLink()
	return e, nil
}

// Run starts the informer, the heartbeat, the staleness checker and the
// fencing checker, and returns when ctx is done. Cancelling ctx without
// Shutdown is what a crash looks like to the other nodes.
func (e *Elector) Run(ctx context.Context) error {
	if !e.running.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	hbCtx, hbCancel := context.WithCancel(ctx)
	defer hbCancel()
	done := make(chan struct{})
	e.mu.Lock()
	if e.stopping {
		e.mu.Unlock()
		return ErrShuttingDown
	}
	e.hbStop, e.hbDone = hbCancel, done
	e.mu.Unlock()

	var wg sync.WaitGroup
	wg.Go(func() { e.informer.Run(ctx.Done()) })
	go func() {
		defer close(done)
		if e.linkMode() {
			e.linkHeartbeatLoop(hbCtx)
			return
		}
		e.heartbeatLoop(hbCtx)
	}()
	wg.Go(func() { e.every(ctx, checkInterval, e.evaluate) })
	if e.linkMode() {
		wg.Go(func() { e.kickLoop(ctx) })
		wg.Go(func() { e.linkFenceLoop(ctx) })
		wg.Go(func() { e.every(ctx, silentCheck, e.checkSilence) }) // silent.go
	} else {
		wg.Go(func() { e.every(ctx, checkInterval, func() { e.checkFence(ctx) }) })
	}
	<-ctx.Done()
	hbCancel()
	<-done
	wg.Wait()
	return nil
}

// every calls f each interval until ctx is done.
func (e *Elector) every(ctx context.Context, interval time.Duration, f func()) {
	t := e.o.Clock.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
			f()
		}
	}
}

// WaitForSync waits until every Lease listed at start has been seen (so
// every existing heartbeat counts as fresh), or ctx ends; it reports
// whether that happened. Ensure refuses to decide before.
func (e *Elector) WaitForSync(ctx context.Context) bool {
	return cache.WaitForCacheSync(ctx.Done(), e.synced)
}

// Holder returns the holder of a Service Lease as this node's cache sees it
// ("" when unset) and whether the Lease exists.
func (e *Elector) Holder(namespace, leaseName string) (string, bool) {
	l := e.cached(namespace + "/" + leaseName)
	if l == nil {
		return "", false
	}
	return holderOf(l), true
}

// Lease returns a vip Lease of the agent namespace as this node's cache
// sees it (the election's informer holds every Lease the agents manage:
// heartbeats, address Leases, conflict records) and whether it exists. The
// caller must not modify it.
func (e *Elector) Lease(namespace, leaseName string) (*coordv1.Lease, bool) {
	l := e.cached(namespace + "/" + leaseName)
	return l, l != nil
}

// HeldLeases lists the Service Leases this node holds, sorted. On shutdown
// the caller withdraws their addresses before calling Shutdown.
func (e *Elector) HeldLeases() []LeaseRef {
	objs, err := e.store.ByIndex(holderIndex, e.self)
	if err != nil {
		e.log.Error(err, "listing held leases")
		return nil
	}
	var out []LeaseRef
	for _, obj := range objs {
		if l, ok := obj.(*coordv1.Lease); ok && holderOf(l) == e.self {
			out = append(out, LeaseRef{Namespace: l.Namespace, Name: l.Name})
		}
	}
	sortRefs(out)
	return out
}

// onUpsert handles an added or updated Lease from the informer.
func (e *Elector) onUpsert(oldObj, obj any) {
	l, ok := obj.(*coordv1.Lease)
	if !ok {
		return
	}
	e.store.OnAddOrUpdate(l)
	switch {
	case e.isHeartbeat(l):
		e.observeHeartbeat(l)
		e.syncLinkMembers()
		e.evaluate()
	case isOwnership(l):
		if old, ok := oldObj.(*coordv1.Lease); ok && old.ResourceVersion == l.ResourceVersion {
			return
		}
		e.countHeld()
		e.o.OnServiceLeaseChange(l.Namespace, l.Name)
	}
}

// onDelete handles a deleted Lease from the informer. A deleted heartbeat
// makes its node stale at once.
func (e *Elector) onDelete(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	l, ok := obj.(*coordv1.Lease)
	if !ok {
		return
	}
	e.store.OnDelete(l)
	switch {
	case e.isHeartbeat(l):
		node := strings.TrimPrefix(l.Name, HeartbeatPrefix)
		e.mu.Lock()
		if st := e.nodes[node]; st != nil {
			st.gone = true
		}
		e.mu.Unlock()
		e.syncLinkMembers()
		e.evaluate()
	case isOwnership(l):
		e.countHeld()
		e.o.OnServiceLeaseChange(l.Namespace, l.Name)
	}
}

// isHeartbeat tells heartbeat Leases of our namespace from the rest.
func (e *Elector) isHeartbeat(l *coordv1.Lease) bool {
	return l.Labels[LabelRole] == RoleHeartbeat && l.Namespace == e.o.Namespace &&
		strings.HasPrefix(l.Name, HeartbeatPrefix) && len(l.Name) > len(HeartbeatPrefix)
}

// countHeld refreshes the vip_agent_leases_held gauge from the informer cache.
func (e *Elector) countHeld() {
	keys, err := e.informer.GetIndexer().IndexKeys(holderIndex, e.self)
	if err == nil {
		e.metrics.leasesHeld.Set(float64(len(keys)))
	}
}

// cached returns the newest known copy of a Lease (nil when unknown). It
// must not be modified.
func (e *Elector) cached(key string) *coordv1.Lease {
	obj, ok, err := e.store.GetByKey(key)
	if err != nil || !ok {
		return nil
	}
	l, _ := obj.(*coordv1.Lease)
	return l
}

// get reads a Lease from the API server (nil when it does not exist) and
// remembers the answer.
func (e *Elector) get(ctx context.Context, namespace, name string) (*coordv1.Lease, error) {
	l, err := e.leases(namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		e.metrics.errors.WithLabelValues(opGet).Inc()
		return nil, fmt.Errorf("reading lease %s/%s: %w", namespace, name, err)
	}
	e.store.Mutation(l)
	return l, nil
}

// leases is the Lease client of a namespace.
func (e *Elector) leases(namespace string) coordclient.LeaseInterface {
	return e.o.Client.CoordinationV1().Leases(namespace)
}

// indexByHolder indexes Service Leases by holder.
func indexByHolder(obj any) ([]string, error) {
	l, ok := obj.(*coordv1.Lease)
	if !ok || !isOwnership(l) || holderOf(l) == "" {
		return nil, nil
	}
	return []string{holderOf(l)}, nil
}

// isOwnership tells ownership Leases (per address, or per DHCP Service)
// from heartbeats and conflict records.
func isOwnership(l *coordv1.Lease) bool {
	r := l.Labels[LabelRole]
	return r == RoleAddress || r == RoleService
}

// markManaged labels l (a deep copy or a new object) as a Lease of ours
// with role.
func markManaged(l *coordv1.Lease, role string) {
	if l.Labels == nil {
		l.Labels = map[string]string{}
	}
	l.Labels[LabelManagedBy] = ManagedByValue
	l.Labels[LabelRole] = role
}

// annotate sets annotation key of l (a deep copy or a new object) to
// value; "" removes it.
func annotate(l *coordv1.Lease, key, value string) {
	switch {
	case value == "":
		delete(l.Annotations, key)
	case l.Annotations == nil:
		l.Annotations = map[string]string{key: value}
	default:
		l.Annotations[key] = value
	}
}

// holderOf returns a Lease's holderIdentity ("" when unset).
func holderOf(l *coordv1.Lease) string {
	if l == nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// durationSeconds is leaseDurationSeconds for Leases we write: the
// heartbeat timeout rounded up, so kubectl readers see the right order of
// magnitude (validity really follows the holder's heartbeat).
func (e *Elector) durationSeconds() *int32 {
	s := int32(math.Ceil(e.o.HeartbeatTimeout.Seconds()))
	return &s
}

// rvAtLeast reports whether resourceVersion a is at least b. Like
// client-go's MutationCache it assumes etcd's integer versions, and falls
// back to equality.
func rvAtLeast(a, b string) bool {
	x, err1 := strconv.ParseUint(a, 10, 64)
	y, err2 := strconv.ParseUint(b, 10, 64)
	if err1 != nil || err2 != nil {
		return a == b
	}
	return x >= y
}
