package controlplane

import (
	"context"
	"errors"
	"math"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"
	coordv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	coordinformers "k8s.io/client-go/informers/coordination/v1"
	"k8s.io/client-go/kubernetes"
	coordclient "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"

	"github.com/vip-lb/vip/pkg/election"
	"github.com/vip-lb/vip/pkg/lbsvc"
)

// observed is the Lease as this node last saw it change.
type observed struct {
	lease *coordv1.Lease // nil: no Lease
	at    time.Time      // local time the change was seen
}

// elector runs client-go's Lease protocol with sub-second timings. Followers
// watch the Lease and take it LeaseDuration after they last saw it change;
// the holder renews every RetryPeriod and gives up (calling
// setLeading(false)) when no renewal started within RenewDeadline has
// succeeded. Every write is preconditioned on the resourceVersion last
// seen, so two nodes never both win.
type elector struct {
	leases             coordclient.LeaseInterface
	client             kubernetes.Interface
	ns, name, id       string
	duration, deadline time.Duration
	retry              time.Duration
	clock              clock.WithTicker
	log                logr.Logger
	onTransition       func(reason string)
	onDenied           func(denied bool)
	// address is the VIP, published on the Lease (vip.io/control-plane-
	// address) so that vip-ccm never hands it out; nil or invalid: none.
	address func() netip.Addr

	mu       sync.Mutex
	seen     observed
	wake     chan struct{}
	deniedAt time.Time // last "credentials refused" log; zero while they work
}

func newElector(o Options, log logr.Logger, onTransition func(string), onDenied func(bool)) *elector {
	return &elector{
		leases: o.Client.CoordinationV1().Leases(o.Namespace), client: o.Client,
		ns: o.Namespace, name: o.LeaseName, id: o.Identity,
		duration: o.LeaseDuration, deadline: o.RenewDeadline, retry: o.RetryPeriod,
		clock: o.Clock, log: log.WithValues("lease", o.Namespace+"/"+o.LeaseName),
		onTransition: onTransition, onDenied: onDenied, wake: make(chan struct{}, 1),
	}
}

// deniedLogEvery spaces the "credentials refused" error in the log.
const deniedLogEvery = 30 * time.Second

// DeniedHint is logged (with the API server's error) while the API server
// refuses this node's credentials for the control-plane Lease.
const DeniedHint = "the API server refuses this node's credentials for the control-plane Lease; the VIP stays down until " +
	"they are allowed to get, list, watch, create and update Leases in the Lease's namespace. On the first " +
	"control-plane node of kubeadm 1.29+, during kubeadm init only /etc/kubernetes/super-admin.conf has rights: " +
	"generate the static Pod with --kubeconfig-path /etc/kubernetes/super-admin.conf there"

// checkDenied logs DeniedHint (at most every deniedLogEvery) when err says
// the credentials are refused, and reports the state to onDenied.
func (e *elector) checkDenied(err error) {
	if !apierrors.IsForbidden(err) && !apierrors.IsUnauthorized(err) {
		return
	}
	now := e.clock.Now()
	e.mu.Lock()
	first := e.deniedAt.IsZero()
	due := first || now.Sub(e.deniedAt) >= deniedLogEvery
	if due {
		e.deniedAt = now
	}
	e.mu.Unlock()
	if first && e.onDenied != nil {
		e.onDenied(true)
	}
	if due {
		e.log.Error(err, DeniedHint)
	}
}

// allowed records that a read or write of the Lease succeeded.
func (e *elector) allowed() {
	e.mu.Lock()
	was := !e.deniedAt.IsZero()
	e.deniedAt = time.Time{}
	e.mu.Unlock()
	if was {
		e.log.Info("the API server accepts this node's credentials for the control-plane Lease again")
		if e.onDenied != nil {
			e.onDenied(false)
		}
	}
}

// watch keeps e.seen up to date until ctx ends and reports when it has
// seen the Lease (or its absence) once.
func (e *elector) watch(ctx context.Context) (synced func() bool) {
	inf := coordinformers.NewFilteredLeaseInformer(e.client, e.ns, 0, cache.Indexers{},
		func(lo *metav1.ListOptions) {
			lo.FieldSelector = fields.OneTermEqualSelector("metadata.name", e.name).String()
		})
	upsert := func(obj any) {
		if l, ok := obj.(*coordv1.Lease); ok {
			e.observe(l)
		}
	}
	// A refused list or watch (RBAC not bound yet) never syncs the cache:
	// say why, besides the reflector's own log line.
	_ = inf.SetWatchErrorHandlerWithContext(func(ctx context.Context, r *cache.Reflector, err error) {
		e.checkDenied(err)
		cache.DefaultWatchErrorHandler(ctx, r, err)
	})
	reg, _ := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    upsert,
		UpdateFunc: func(_, obj any) { upsert(obj) },
		DeleteFunc: func(any) { e.observe(nil) },
	})
	go inf.Run(ctx.Done())
	return reg.HasSynced
}

// observe records l if it differs from what was seen, stamped now.
func (e *elector) observe(l *coordv1.Lease) {
	e.mu.Lock()
	defer e.mu.Unlock()
	old := e.seen.lease
	if l != nil && old != nil && l.ResourceVersion == old.ResourceVersion {
		return
	}
	if l != nil && old != nil && newerRV(old.ResourceVersion, l.ResourceVersion) {
		return // an older event after our own newer write
	}
	if l == nil && old == nil && !e.seen.at.IsZero() {
		return
	}
	e.seen = observed{lease: l, at: e.clock.Now()}
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// newerRV reports whether a is newer than b (etcd revisions are integers;
// anything else compares as not newer).
func newerRV(a, b string) bool {
	x, errA := strconv.ParseUint(a, 10, 64)
	y, errB := strconv.ParseUint(b, 10, 64)
	return errA == nil && errB == nil && x > y
}

func (e *elector) current() observed {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.seen
}

// run campaigns until ctx ends. setLeading is called on every change of
// leadership, synchronously: when it returns false the caller has stopped
// announcing, and only then is the Lease released (on ctx end) or given up.
func (e *elector) run(ctx context.Context, setLeading func(bool)) {
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	synced := e.watch(wctx)
	if !cache.WaitForCacheSync(ctx.Done(), synced) {
		return
	}
	e.observeSynced()
	e.allowed()
	tick := e.clock.NewTicker(checkInterval)
	defer tick.Stop()

	leading := false
	var renewedAt time.Time   // start of the last successful write as holder
	var nextRenew time.Time   // when the holder writes next
	var nextAttempt time.Time // when a follower may try again after a failed write
	stepDown := func(reason, msg string) {
		e.log.Info(msg)
		leading = false
		setLeading(false)
		e.onTransition(reason)
	}
	for {
		now := e.clock.Now()
		if leading && now.Sub(renewedAt) >= e.deadline {
			stepDown("renew-deadline", "could not renew the control-plane Lease in time; stepping down")
		}
		if leading && !e.holds() {
			stepDown("lost", "control-plane Lease taken by another node; stepping down")
		}
		if leading && !now.Before(nextRenew) {
			ok, lost := e.write(ctx, renewedAt.Add(e.deadline), false)
			switch {
			case ok:
				renewedAt, nextRenew = now, now.Add(e.retry)
			case lost:
				stepDown("lost", "control-plane Lease changed by another node; stepping down")
			default:
				nextRenew = e.clock.Now().Add(e.retry / 4)
			}
		}
		if !leading && !now.Before(nextAttempt) && e.mayAcquire(now) {
			if ok, _ := e.write(ctx, now.Add(e.deadline), true); ok {
				leading, renewedAt, nextRenew = true, now, now.Add(e.retry)
				e.log.Info("holding the control-plane Lease")
				setLeading(true)
				e.onTransition("acquired")
			} else {
				nextAttempt = e.clock.Now().Add(e.retry / 2)
			}
		}
		select {
		case <-ctx.Done():
			if leading {
				setLeading(false)
				e.release()
				e.onTransition("released")
			}
			return
		case <-tick.C():
		case <-e.wake:
		}
	}
}

// observeSynced stamps "no Lease" once the informer has synced without one.
func (e *elector) observeSynced() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.seen.lease == nil && e.seen.at.IsZero() {
		e.seen.at = e.clock.Now()
	}
}

// holds reports whether the Lease as last seen names this node.
func (e *elector) holds() bool {
	s := e.current()
	return s.lease != nil && s.lease.Spec.HolderIdentity != nil && *s.lease.Spec.HolderIdentity == e.id
}

// mayAcquire reports whether this node may try to take the Lease now: it is
// missing, released, already ours, or unchanged for LeaseDuration.
func (e *elector) mayAcquire(now time.Time) bool {
	s := e.current()
	if s.lease == nil {
		return true
	}
	h := s.lease.Spec.HolderIdentity
	return h == nil || *h == "" || *h == e.id || now.Sub(s.at) >= e.duration
}

// write creates, takes (acquire) or renews the Lease with a compare-and-swap
// on the resourceVersion last seen, within deadline. lost reports that
// another node changed the Lease meanwhile.
func (e *elector) write(ctx context.Context, deadline time.Time, acquire bool) (ok, lost bool) {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	s := e.current()
	now := metav1.NewMicroTime(e.clock.Now())
	secs := int32(math.Ceil(e.duration.Seconds()))
	if s.lease == nil {
		l := &coordv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: e.name, Namespace: e.ns},
			Spec: coordv1.LeaseSpec{HolderIdentity: &e.id, LeaseDurationSeconds: &secs,
				AcquireTime: &now, RenewTime: &now, LeaseTransitions: ptr(int32(0))},
		}
		e.publish(l)
		got, err := e.leases.Create(ctx, l, metav1.CreateOptions{})
		if err != nil {
			e.afterError(ctx, err, "creating")
			return false, apierrors.IsAlreadyExists(err)
		}
		e.allowed()
		e.observe(got)
		return true, false
	}
	l := s.lease.DeepCopy()
	holder := ""
	if l.Spec.HolderIdentity != nil {
		holder = *l.Spec.HolderIdentity
	}
	if acquire && holder != e.id {
		l.Spec.AcquireTime = &now
		t := int32(1)
		if l.Spec.LeaseTransitions != nil {
			t = *l.Spec.LeaseTransitions + 1
		}
		l.Spec.LeaseTransitions = &t
	} else if !acquire && holder != e.id {
		return false, true
	}
	if l.Spec.AcquireTime == nil {
		l.Spec.AcquireTime = &now
	}
	l.Spec.HolderIdentity = &e.id
	l.Spec.LeaseDurationSeconds = &secs
	l.Spec.RenewTime = &now
	e.publish(l)
	got, err := e.leases.Update(ctx, l, metav1.UpdateOptions{})
	if err != nil {
		e.afterError(ctx, err, "updating")
		return false, apierrors.IsConflict(err) || apierrors.IsNotFound(err)
	}
	e.allowed()
	e.observe(got)
	return true, false
}

// afterError refreshes the cached Lease after a conflict, so the next
// attempt uses what is really there (and judges its age from now).
func (e *elector) afterError(ctx context.Context, err error, what string) {
	e.checkDenied(err)
	if ctx.Err() == nil && !apierrors.IsConflict(err) && !apierrors.IsAlreadyExists(err) && !apierrors.IsNotFound(err) {
		e.log.V(1).Info("control-plane Lease write failed", "op", what, "err", err)
		return
	}
	if ctx.Err() != nil {
		e.log.V(1).Info("control-plane Lease write timed out", "op", what, "err", err)
		return
	}
	got, gerr := e.leases.Get(ctx, e.name, metav1.GetOptions{})
	switch {
	case gerr == nil:
		e.observe(got)
	case apierrors.IsNotFound(gerr):
		e.observe(nil)
	}
}

// releaseTimeout bounds the write that gives the Lease up.
const releaseTimeout = time.Second

// release gives up the Lease (only if this node still holds it) so a
// follower takes over at once instead of waiting for it to expire.
func (e *elector) release() {
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	s := e.current()
	if s.lease == nil || s.lease.Spec.HolderIdentity == nil || *s.lease.Spec.HolderIdentity != e.id {
		return
	}
	l := s.lease.DeepCopy()
	now := metav1.NewMicroTime(e.clock.Now())
	empty := ""
	one := int32(1)
	l.Spec.HolderIdentity = &empty
	l.Spec.LeaseDurationSeconds = &one
	l.Spec.RenewTime = &now
	if _, err := e.leases.Update(ctx, l, metav1.UpdateOptions{}); err != nil {
		if !errors.Is(err, context.DeadlineExceeded) {
			e.log.Info("could not release the control-plane Lease; followers take it when it expires", "err", err)
		}
		return
	}
	e.log.Info("released the control-plane Lease")
}

func ptr[T any](v T) *T { return &v }

// publish puts the VIP and vip's labels on the Lease this node writes.
func (e *elector) publish(l *coordv1.Lease) {
	if l.Labels == nil {
		l.Labels = map[string]string{}
	}
	l.Labels[election.LabelManagedBy] = election.ManagedByValue
	l.Labels[election.LabelRole] = RoleControlPlane
	if e.address == nil {
		return
	}
	if a := e.address(); a.IsValid() {
		if l.Annotations == nil {
			l.Annotations = map[string]string{}
		}
		l.Annotations[lbsvc.AnnotationControlPlaneAddress] = a.String()
	}
}

// RoleControlPlane is the vip.io/role label of the control-plane Lease.
const RoleControlPlane = "control-plane"
