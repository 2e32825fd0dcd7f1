package election

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vip-lb/vip/pkg/lbsvc"
)

// heartbeat is the state of this node's own heartbeat and fencing. Times
// are on this node's clock.
type heartbeat struct {
	lease         *coordv1.Lease // as last written; nil = read it first
	everOK        bool           // renewed at least once since start
	lastOK        time.Time      // start of the last successful renewal
	lastAttemptOK bool           // the last renewal succeeded
	failingSince  time.Time      // start of the first failed renewal after lastOK
	fenced        bool
	recoverRV     string    // while fenced: version of our first renewal that worked again
	lastProbe     time.Time // when peers were last asked
	silentRounds  int       // consecutive probe rounds in which no peer answered
	inflight      time.Time // start of the renewal in progress (zero: none)
	oks           uint64    // successful renewals, to notice one during a probe round
	lastErr       error     // the last renewal's error (nil after a success)
	// recheck: the heartbeat may have looked stale to peers, so the
	// ownership Leases must be re-read (recheckHeld); rechecking: a
	// re-read is running.
	recheck, rechecking bool
}

// heartbeatName is this node's heartbeat Lease name.
func (e *Elector) heartbeatName() string { return HeartbeatPrefix + e.self }

// heartbeatLoop renews the heartbeat every period until ctx is done.
func (e *Elector) heartbeatLoop(ctx context.Context) {
	t := e.o.Clock.NewTicker(e.o.HeartbeatPeriod)
	defer t.Stop()
	for {
		e.renew(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
	}
}

// renew writes the heartbeat once and records the outcome. A renewal may
// take at most timeout-period, so a hung API server counts as a failure
// before peers could judge this node dead.
func (e *Elector) renew(ctx context.Context) {
	start := e.o.Clock.Now()
	rctx, cancel := context.WithTimeout(ctx, e.o.HeartbeatTimeout-e.o.HeartbeatPeriod)
	defer cancel()
	e.mu.Lock()
	cur := e.hb.lease
	e.hb.inflight = start
	e.mu.Unlock()
	l, err := e.writeHeartbeat(rctx, cur, start)
	e.mu.Lock()
	e.hb.inflight = time.Time{}
	e.mu.Unlock()
	if ctx.Err() != nil {
		return // stopping: the outcome means nothing
	}
	e.mu.Lock()
	first, recovered := false, false
	if err == nil {
		first, recovered = !e.hb.everOK, !e.hb.failingSince.IsZero()
		if e.hb.everOK && !e.linkMode() && e.o.Clock.Now().Sub(e.hb.lastOK) >= e.o.HeartbeatTimeout-e.o.HeartbeatPeriod {
			// Between the previous renewal's start and this one's end
			// the heartbeat may have stood still long enough for peers
			// to take this node's Leases over (judge): re-read them.
			e.hb.recheck = true
		}
		e.hb.lease, e.hb.everOK, e.hb.lastOK, e.hb.lastAttemptOK = l, true, start, true
		e.hb.failingSince, e.hb.silentRounds, e.hb.lastErr = time.Time{}, 0, nil
		e.hb.oks++
		if e.hb.fenced && (!e.linkMode() || e.o.Link.Connected()) {
			e.hb.recoverRV = l.ResourceVersion
		}
	} else {
		if e.hb.failingSince.IsZero() {
			e.hb.failingSince = start
			e.log.Info("cannot renew heartbeat", "lease", e.o.Namespace+"/"+e.heartbeatName(), "err", err)
		}
		e.hb.lastAttemptOK, e.hb.lastErr = false, err
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			e.hb.lease = nil
		}
	}
	e.mu.Unlock()
	switch {
	case err != nil:
		e.metrics.errors.WithLabelValues(opHeartbeat).Inc()
		e.log.V(1).Info("heartbeat renewal failed", "err", err)
	case recovered:
		e.log.Info("heartbeat renewed again", "lease", e.o.Namespace+"/"+e.heartbeatName())
	}
	if first {
		e.evaluate()
	}
	if err == nil {
		e.startRecheck(ctx)
	}
}

// writeHeartbeat updates (or first reads, or creates) the heartbeat Lease.
func (e *Elector) writeHeartbeat(ctx context.Context, cur *coordv1.Lease, now time.Time) (*coordv1.Lease, error) {
	leases := e.leases(e.o.Namespace)
	name := e.heartbeatName()
	if cur == nil {
		got, err := leases.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			l := &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.o.Namespace}}
			e.fillHeartbeat(l, now)
			e.metrics.writes.WithLabelValues(writeHeartbeat).Inc()
			out, err := leases.Create(ctx, l, metav1.CreateOptions{})
			if err != nil {
				return nil, fmt.Errorf("creating heartbeat lease %s/%s: %w", e.o.Namespace, name, err)
			}
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading heartbeat lease %s/%s: %w", e.o.Namespace, name, err)
		}
		cur = got
	}
	l := cur.DeepCopy()
	e.fillHeartbeat(l, now)
	e.metrics.writes.WithLabelValues(writeHeartbeat).Inc()
	out, err := leases.Update(ctx, l, metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("renewing heartbeat lease %s/%s: %w", e.o.Namespace, name, err)
	}
	return out, nil
}

// fillHeartbeat sets the fields of our heartbeat Lease for a renewal at now.
func (e *Elector) fillHeartbeat(l *coordv1.Lease, now time.Time) {
	markManaged(l, RoleHeartbeat)
	annotate(l, AnnotationHealth, e.o.HealthAddress)
	annotate(l, AnnotationLink, e.o.LinkAddress)
	annotate(l, lbsvc.AnnotationNodeReady, strconv.FormatBool(e.o.Ready()))
	e.mu.Lock()
	for k, v := range e.published {
		annotate(l, k, v)
	}
	e.mu.Unlock()
	t := metav1.NewMicroTime(now)
	if holderOf(l) != e.self || l.Spec.AcquireTime == nil {
		self := e.self
		l.Spec.HolderIdentity = &self
		l.Spec.AcquireTime = &t
	}
	l.Spec.RenewTime = &t
	l.Spec.LeaseDurationSeconds = e.durationSeconds()
}

// Publish sets annotations carried by this node's heartbeat Lease from its
// next renewal on ("" removes one): the node's addresses and gateways, for
// vip-ccm. The heartbeat is renewed every period anyway, so publishing
// costs no extra write; the values change only when they change.
func (e *Elector) Publish(values map[string]string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.published == nil {
		e.published = map[string]string{}
	}
	maps.Copy(e.published, values)
}
