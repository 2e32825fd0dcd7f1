package election

import (
	"context"
	"fmt"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// recheckTimeout bounds one re-read of the ownership Leases.
const recheckTimeout = 5 * time.Second

// A node whose heartbeat renewals stalled (a cut port, a hung API server
// connection) for longer than its peers wait before they judge it dead may
// have lost Leases while it still had their addresses bound. Its watch
// tells it, but late: after a cut the watch connection resumes only after
// TCP's retransmission back-off, and the events come after everything
// queued on it meanwhile. So the first renewal that works after such a gap
// re-reads every ownership Lease in one LIST (not one GET each), puts the
// ones another node took into the cache and reports them through
// OnServiceLeaseChange at once: the agent withdraws those addresses without
// waiting for the watch. It writes nothing; at rest nothing triggers it.

// startRecheck runs recheckHeld in the background when a renewal asked for
// it and no re-read is running. A failed re-read is tried again after the
// next successful renewal.
func (e *Elector) startRecheck(ctx context.Context) {
	e.mu.Lock()
	if !e.hb.recheck || e.hb.rechecking || e.stopping {
		e.mu.Unlock()
		return
	}
	e.hb.recheck, e.hb.rechecking = false, true
	e.mu.Unlock()
	go func() {
		lost, err := e.recheckHeld(ctx)
		e.mu.Lock()
		e.hb.rechecking = false
		if err != nil {
			e.hb.recheck = true
		}
		e.mu.Unlock()
		switch {
		case err != nil && ctx.Err() != nil:
			// Stopping: nothing to retry.
		case err != nil:
			e.metrics.errors.WithLabelValues(opGet).Inc()
			e.log.Info("cannot re-read the Leases this node holds; retrying after the next renewal", "err", err)
		case len(lost) > 0:
			e.log.Info("re-read the Leases after the heartbeat stalled: other nodes took some over", "lost", len(lost))
		}
	}()
}

// recheckHeld lists the ownership Leases of the agent namespace and
// compares them with the ones the cache says this node holds. Each one now
// held by another node (or by nobody) at a version at least the cached one
// goes into the cache and is reported through OnServiceLeaseChange; lost
// returns them.
func (e *Elector) recheckHeld(ctx context.Context) (lost []LeaseRef, err error) {
	held := e.HeldLeases()
	if len(held) == 0 {
		return nil, nil
	}
	lctx, cancel := context.WithTimeout(ctx, recheckTimeout)
	defer cancel()
	list, err := e.leases(e.o.Namespace).List(lctx, metav1.ListOptions{
		LabelSelector: fmt.Sprintf("%s=%s,%s in (%s,%s)", LabelManagedBy, ManagedByValue, LabelRole, RoleAddress, RoleService),
	})
	if err != nil {
		return nil, fmt.Errorf("listing the ownership leases of %s: %w", e.o.Namespace, err)
	}
	byName := make(map[string]*coordv1.Lease, len(list.Items))
	for i := range list.Items {
		byName[list.Items[i].Name] = &list.Items[i]
	}
	for _, ref := range held {
		if ref.Namespace != e.o.Namespace {
			continue
		}
		l, cur := byName[ref.Name], e.cached(ref.Namespace+"/"+ref.Name)
		if l == nil || cur == nil || holderOf(l) == e.self || !rvAtLeast(l.ResourceVersion, cur.ResourceVersion) {
			// Deleted (the watch tells, and the agent's reconcile
			// withdraws), still ours, or changed by this node since the
			// list was read.
			continue
		}
		e.store.Mutation(l)
		lost = append(lost, ref)
	}
	for _, ref := range lost {
		e.o.OnServiceLeaseChange(ref.Namespace, ref.Name)
	}
	return lost, nil
}
