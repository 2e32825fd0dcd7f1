package election

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	coordv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// shutdownParallelism bounds concurrent Lease writes during Shutdown.
const shutdownParallelism = 8

// Release gives up a Service Lease this node holds: holderIdentity becomes
// successor ("" = unset) by an update preconditioned on the version seen.
// A hand-off to a successor marks the Lease AnnotationHandedOffBy this
// node: the caller may keep the addresses bound until the successor's
// first announcement removes the mark (make before break); a release to
// nobody needs them withdrawn first. It does nothing when this node does
// not hold the Lease (any more).
func (e *Elector) Release(ctx context.Context, namespace, leaseName string, successor string) error {
	key := namespace + "/" + leaseName
	e.mu.Lock()
	why := e.reasons[key]
	delete(e.reasons, key)
	e.mu.Unlock()
	if why == "" {
		why = "released by " + e.self
	}
	return e.release(ctx, namespace, leaseName, successor, why)
}

// release is Release with the reason to record.
func (e *Elector) release(ctx context.Context, namespace, leaseName, successor, why string) error {
	key := namespace + "/" + leaseName
	log := e.log.WithValues("lease", key)
	if successor == "" {
		why = fmt.Sprintf("%s released it: %s", e.self, why)
	} else {
		why = fmt.Sprintf("%s handed it off to %s: %s", e.self, successor, why)
	}
	l := e.cached(key)
	for range maxAttempts {
		if l == nil || holderOf(l) != e.self {
			return nil
		}
		obj := l.DeepCopy()
		e.claim(obj, successor, "", why, e.o.Clock.Now())
		if successor != "" {
			annotate(obj, AnnotationHandedOffBy, e.self)
		}
		e.metrics.writes.WithLabelValues(writeService).Inc()
		out, err := e.leases(namespace).Update(ctx, obj, metav1.UpdateOptions{})
		switch {
		case err == nil:
			e.store.Mutation(out)
			log.Info("lease released", "successor", successor, "reason", why)
			return nil
		case apierrors.IsNotFound(err):
			return nil
		case !apierrors.IsConflict(err):
			e.metrics.errors.WithLabelValues(opRelease).Inc()
			return fmt.Errorf("releasing lease %s to %q: %w", key, successor, err)
		}
		if l, err = e.get(ctx, namespace, leaseName); err != nil {
			return err
		}
	}
	return fmt.Errorf("releasing lease %s: it changed %d times: %w", key, maxAttempts,
		apierrors.NewConflict(coordv1.Resource("leases"), leaseName, nil))
}

// Delete deletes a Service Lease (the Service is gone or no longer wants
// layer 2), preconditioned on the version seen so that a Lease changed
// meanwhile survives: that change re-enqueues the Service and a later
// Delete sees it. A missing Lease is not an error.
func (e *Elector) Delete(ctx context.Context, namespace, leaseName string) error {
	key := namespace + "/" + leaseName
	e.mu.Lock()
	delete(e.wants, key)
	delete(e.reasons, key)
	e.mu.Unlock()
	l := e.cached(key)
	if l == nil {
		// Not in the cache: it may still exist without our labels (left by
		// kube-vip); look, so that nothing leaks.
		var err error
		if l, err = e.get(ctx, namespace, leaseName); err != nil || l == nil {
			return err
		}
	}
	rv := l.ResourceVersion
	e.metrics.writes.WithLabelValues(writeService).Inc()
	err := e.leases(namespace).Delete(ctx, leaseName, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &rv}})
	switch {
	case err == nil:
		e.log.Info("lease deleted", "lease", key)
		return nil
	case apierrors.IsNotFound(err):
		return nil
	case apierrors.IsConflict(err):
		e.log.V(1).Info("lease changed before deletion, keeping it", "lease", key)
		return nil
	}
	e.metrics.errors.WithLabelValues(opDelete).Inc()
	return fmt.Errorf("deleting lease %s: %w", key, err)
}

// Shutdown leaves gracefully. The caller must first withdraw what must
// never be on two nodes at once (addresses on a MAC of their own). Then
// Shutdown stops the heartbeat, deletes the heartbeat Lease (peers judge
// this node dead at once, so none of them hands a Service back to it) and
// hands every held Lease to the preferred of the other alive candidates of
// its last Ensure (unset when there is none), so the successors announce
// within a watch round trip; the caller withdraws the other addresses once
// the successors have (AnnotationHandedOffBy). Ensure fails with
// ErrShuttingDown from now on.
func (e *Elector) Shutdown(ctx context.Context) error {
	e.mu.Lock()
	if e.stopping {
		e.mu.Unlock()
		return nil
	}
	e.stopping = true
	stop, done := e.hbStop, e.hbDone
	e.mu.Unlock()
	if stop != nil {
		stop()
		select {
		case <-done:
		case <-ctx.Done():
			return fmt.Errorf("stopping heartbeat: %w", ctx.Err())
		}
	}
	e.evaluate()

	var errs []error
	name := e.heartbeatName()
	e.metrics.writes.WithLabelValues(writeHeartbeat).Inc()
	if err := e.leases(e.o.Namespace).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		e.metrics.errors.WithLabelValues(opDelete).Inc()
		errs = append(errs, fmt.Errorf("deleting heartbeat lease %s/%s: %w", e.o.Namespace, name, err))
	}

	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, shutdownParallelism)
	for _, ref := range e.HeldLeases() {
		successor := e.successor(ref.Namespace + "/" + ref.Name)
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := e.release(ctx, ref.Namespace, ref.Name, successor, "it is shutting down"); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// successor is the preferred other alive candidate of a Lease's last Ensure.
func (e *Elector) successor(key string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	w, ok := e.wants[key]
	if !ok {
		return ""
	}
	var others []string
	for _, c := range w.candidates {
		if c != e.self && e.aliveLocked(c) {
			others = append(others, c)
		}
	}
	return Preferred(w.serviceKey, others)
}

// sortRefs sorts Lease references by namespace and name.
func sortRefs(refs []LeaseRef) {
	slices.SortFunc(refs, func(a, b LeaseRef) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
}
