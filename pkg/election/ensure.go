package election

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/vip-lb/vip/pkg/lbsvc"
)

// maxAttempts bounds the re-read-and-decide rounds after a lost race.
const maxAttempts = 3

// Change is what an Ensure changed about a Service's ownership.
type Change int

// The ownership changes.
const (
	// None: ownership is as it was.
	None Change = iota
	// Acquired: this node took a Lease that was missing, unset or held by a
	// node that is no longer a candidate.
	Acquired
	// TookOver: this node took the Lease from a holder whose heartbeat went
	// stale.
	TookOver
	// HandedOff: this node must give the Lease to a successor (see
	// Result.Release).
	HandedOff
	// Released: this node must give the Lease up with no successor.
	Released
)

// String returns the change's name, usable as an Event reason.
func (c Change) String() string {
	switch c {
	case None:
		return "None"
	case Acquired:
		return "Acquired"
	case TookOver:
		return "TookOver"
	case HandedOff:
		return "HandedOff"
	case Released:
		return "Released"
	}
	return fmt.Sprintf("Change(%d)", int(c))
}

// Result is Ensure's answer for one Service.
type Result struct {
	// ShouldAnnounce is true when this node must announce the Service now.
	ShouldAnnounce bool
	// Holder is the Lease holder after the call ("" = nobody).
	Holder string
	// Change says what changed; Reason says why, for Events and logs.
	Change Change
	Reason string
	// Release is set when this node holds the Lease but must give it up
	// (Change is HandedOff or Released) by calling Release(ctx, namespace,
	// leaseName, Successor): to a successor while still announcing (it
	// withdraws once the successor's announcement removes
	// AnnotationHandedOffBy), to nobody after withdrawing.
	Release   bool
	Successor string
	// RequeueAfter, when positive, asks the caller to call Ensure again
	// after it (a preferred node is settling before it gets the Service).
	RequeueAfter time.Duration
	// Fresh is set when this call acquired a Lease that did not exist or
	// had no holder: no vip node held the address before, so the caller
	// may ask the link whether another host uses it before announcing.
	Fresh bool
}

// plan is a decision: the answer and, when obj is set, the write it needs.
type plan struct {
	res    Result
	obj    *coordv1.Lease
	create bool
}

// Ensure decides who announces a Service and writes its Lease when this
// node acquires it. candidates are the nodes allowed to serve the Service
// (the agent's filter); only the alive ones count. serviceKey (namespace/
// name) seeds the rendezvous hash. Every acquisition is a create or an
// update preconditioned on the resourceVersion seen, so of several nodes
// racing exactly one wins; the losers re-read and report the winner.
// Ensure writes nothing while ownership stays as it is.
func (e *Elector) Ensure(ctx context.Context, namespace, leaseName, serviceKey string, candidates []string) (Result, error) {
	key := namespace + "/" + leaseName
	log := e.log.WithValues("service", serviceKey, "lease", key)
	e.mu.Lock()
	if e.stopping {
		e.mu.Unlock()
		return Result{Holder: holderOf(e.cached(key))}, ErrShuttingDown
	}
	e.wants[key] = want{serviceKey: serviceKey, candidates: slices.Clone(candidates)}
	e.mu.Unlock()
	if !e.synced() {
		return Result{}, ErrNotSynced
	}

	l := e.cached(key)
	for range maxAttempts {
		p := e.decide(l, namespace, leaseName, serviceKey, candidates)
		if p.res.Release {
			e.mu.Lock()
			e.reasons[key] = p.res.Reason
			e.mu.Unlock()
		}
		if p.obj == nil {
			return p.res, nil
		}
		var out *coordv1.Lease
		var err error
		e.metrics.writes.WithLabelValues(writeService).Inc()
		if p.create {
			out, err = e.leases(namespace).Create(ctx, p.obj, metav1.CreateOptions{})
		} else {
			out, err = e.leases(namespace).Update(ctx, p.obj, metav1.UpdateOptions{})
		}
		if err == nil {
			e.store.Mutation(out)
			if p.res.Change == TookOver {
				e.metrics.takeovers.Inc()
			}
			if p.res.Change != None {
				log.Info("lease acquired", "change", p.res.Change.String(), "reason", p.res.Reason)
			}
			return p.res, nil
		}
		if !apierrors.IsConflict(err) && !apierrors.IsAlreadyExists(err) {
			op := opUpdate
			if p.create {
				op = opCreate
			}
			e.metrics.errors.WithLabelValues(op).Inc()
			return Result{Holder: holderOf(l), Reason: "writing the Lease failed"},
				fmt.Errorf("writing lease %s for %s: %w", key, serviceKey, err)
		}
		log.V(1).Info("lost the race for the lease, re-reading", "err", err)
		if l, err = e.get(ctx, namespace, leaseName); err != nil {
			return Result{}, err
		}
	}
	return Result{Holder: holderOf(l), Reason: "ownership keeps changing"},
		fmt.Errorf("lease %s for %s changed %d times while deciding: %w", key, serviceKey, maxAttempts,
			apierrors.NewConflict(coordv1.Resource("leases"), leaseName, nil))
}

// decide applies the ownership rules to the Lease l (nil = none).
func (e *Elector) decide(l *coordv1.Lease, namespace, leaseName, serviceKey string, candidates []string) plan {
	now := e.o.Clock.Now()
	v := e.snapshot(candidates)
	pref := Preferred(serviceKey, v.alive)
	if l == nil {
		if pref != e.self {
			return plan{res: Result{Reason: waiting(pref)}}
		}
		why := fmt.Sprintf("%s is the preferred of the alive candidates %v", e.self, v.alive)
		obj := &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: leaseName, Namespace: namespace}}
		e.claim(obj, e.self, serviceKey, why, now)
		return plan{res: Result{ShouldAnnounce: true, Holder: e.self, Change: Acquired, Reason: why, Fresh: true}, obj: obj, create: true}
	}
	holder := holderOf(l)
	if holder == e.self {
		return e.decideOwn(l, v, serviceKey, candidates, now)
	}
	if holder != "" && v.isAlive(holder) {
		e.dropHandOff(namespace + "/" + leaseName)
		return plan{res: Result{Holder: holder, Reason: "held by " + holder}}
	}
	change, why := Acquired, "the Lease had no holder"
	switch {
	case holder == "":
		e.dropHandOff(namespace + "/" + leaseName)
	case slices.Contains(candidates, holder) || !e.Alive(holder):
		change, why = TookOver, fmt.Sprintf("holder %s stopped renewing its heartbeat", holder)
		if e.linkMode() {
			why = fmt.Sprintf("holder %s went silent on the link", holder)
		}
		e.dropHandOff(namespace + "/" + leaseName)
	default:
		// The holder is alive but no candidate: it may still announce, and
		// it hands the Lease off itself as soon as it sees that (the same
		// EndpointSlice, Node label or readiness change). Taking it now
		// would put the address on two nodes until its watch caught up;
		// only a holder that has not handed off within HeartbeatTimeout
		// (a stuck agent) loses the Lease without its consent.
		why = fmt.Sprintf("holder %s is no longer a candidate", holder)
		if wait := e.awaitHandOff(namespace+"/"+leaseName, holder, now); wait > 0 {
			return plan{res: Result{Holder: holder, Reason: why + "; waiting for it to hand off", RequeueAfter: wait}}
		}
		why += fmt.Sprintf(" and did not hand it off within %v", e.o.HeartbeatTimeout)
	}
	if pref != e.self {
		return plan{res: Result{Holder: holder, Reason: why + "; " + waiting(pref)}}
	}
	why += fmt.Sprintf("; %s is the preferred of the alive candidates %v", e.self, v.alive)
	obj := l.DeepCopy()
	e.claim(obj, e.self, serviceKey, why, now)
	return plan{res: Result{ShouldAnnounce: true, Holder: e.self, Change: change, Reason: why, Fresh: holder == ""}, obj: obj}
}

// decideOwn applies the rules for a Lease this node holds.
func (e *Elector) decideOwn(l *coordv1.Lease, v view, serviceKey string, candidates []string, now time.Time) plan {
	if !v.selfAlive || !v.selfReady {
		// Not a candidate because it cannot announce (fenced, or a
		// restarted agent whose ready heartbeat peers have not seen yet):
		// keep the Lease without announcing; the peers take it over if
		// this lasts (they judge this node by its heartbeat).
		why := "this node is not ready to announce"
		if v.fenced {
			why = "this node is fenced: it cannot renew its heartbeat"
			if e.linkMode() {
				why = "this node is fenced: it hears none of its peers on the link"
			}
		}
		return plan{res: Result{Holder: e.self, Reason: why}}
	}
	if !slices.Contains(candidates, e.self) {
		others := slices.DeleteFunc(slices.Clone(v.alive), func(n string) bool { return n == e.self })
		return handOff(e.self, Preferred(serviceKey, others), "this node is no longer a candidate")
	}
	res := Result{ShouldAnnounce: true, Holder: e.self, Reason: "held by this node"}
	if pref := Preferred(serviceKey, v.alive); e.o.Rebalance && pref != e.self {
		up := now.Sub(v.since[pref])
		if up >= e.o.SettleTime {
			return handOff(e.self, pref, fmt.Sprintf("rebalancing: preferred node %s has been alive for %v", pref, up.Round(time.Millisecond)))
		}
		res.RequeueAfter = e.o.SettleTime - up
	}
	if l.Labels[LabelManagedBy] != ManagedByValue || !isOwnership(l) {
		// A Lease written by someone else (kube-vip): adopt it so the
		// informer sees it from now on.
		obj := l.DeepCopy()
		setLabels(obj, serviceKey)
		return plan{res: res, obj: obj}
	}
	return plan{res: res}
}

// awaitHandOff returns how much longer this node waits for the alive
// holder of the Lease key to hand it off, counted from the first time it
// saw holder as no candidate; 0 once HeartbeatTimeout has passed.
func (e *Elector) awaitHandOff(key, holder string, now time.Time) time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	o, ok := e.outgoing[key]
	if !ok || o.holder != holder {
		o = outgoing{holder: holder, since: now}
		e.outgoing[key] = o
	}
	if left := e.o.HeartbeatTimeout - now.Sub(o.since); left > 0 {
		return left
	}
	delete(e.outgoing, key)
	return 0
}

// dropHandOff forgets a wait for the hand-off of the Lease key.
func (e *Elector) dropHandOff(key string) {
	e.mu.Lock()
	delete(e.outgoing, key)
	e.mu.Unlock()
}

// handOff is the answer for a Lease this node must give to successor.
func handOff(self, successor, why string) plan {
	res := Result{Holder: self, Change: HandedOff, Reason: why, Release: true, Successor: successor}
	if successor == "" {
		res.Change = Released
		res.Reason += "; no other candidate is alive"
	}
	return plan{res: res}
}

// waiting explains why this node does not acquire.
func waiting(pref string) string {
	if pref == "" {
		return "no alive candidate"
	}
	return "preferred node " + pref + " acquires it"
}

// claim makes l a Service Lease held by holder ("" = unset) at now.
func (e *Elector) claim(l *coordv1.Lease, holder, serviceKey, reason string, now time.Time) {
	setLabels(l, serviceKey)
	annotate(l, AnnotationReason, reason)
	annotate(l, AnnotationHandedOffBy, "")
	old := holderOf(l)
	t := metav1.NewMicroTime(now)
	l.Spec.RenewTime = &t
	l.Spec.LeaseDurationSeconds = e.durationSeconds()
	if holder == "" {
		l.Spec.HolderIdentity, l.Spec.AcquireTime = nil, nil
		return
	}
	if holder != old || l.Spec.AcquireTime == nil {
		l.Spec.AcquireTime = &t
	}
	if old != "" && old != holder && l.ResourceVersion != "" {
		transitions := int32(1)
		if l.Spec.LeaseTransitions != nil {
			transitions += *l.Spec.LeaseTransitions
		}
		l.Spec.LeaseTransitions = &transitions
	}
	l.Spec.HolderIdentity = &holder
}

// setLabels puts the ownership labels on l: an address Lease
// (vip-addr-<addr>) gets RoleAddress and the address annotation, any other
// the Service labels. serviceKey "" keeps them as they are.
func setLabels(l *coordv1.Lease, serviceKey string) {
	if strings.HasPrefix(l.Name, lbsvc.AddressLeasePrefix) {
		markManaged(l, RoleAddress)
		if serviceKey != "" {
			annotate(l, lbsvc.AnnotationAddress, serviceKey)
		}
		return
	}
	markManaged(l, RoleService)
	if serviceKey == "" {
		return
	}
	annotate(l, AnnotationService, serviceKey)
	name := serviceKey[strings.LastIndex(serviceKey, "/")+1:]
	if len(validation.IsValidLabelValue(name)) == 0 {
		l.Labels[LabelService] = name
	}
}
