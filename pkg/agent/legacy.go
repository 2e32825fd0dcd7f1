package agent

import (
	"context"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vip-lb/vip/pkg/lbsvc"
)

// cleanupLegacy deletes, once per Service and only on the node announcing
// it, the per-Service Lease kubevip-<service> an earlier version (or
// kube-vip) left in the Service's namespace. Ownership is per address now,
// in the agent namespace. Where RBAC does not allow it (the agent may write
// Leases only in its own namespace) the Lease is left alone: it is inert.
func (a *Agent) cleanupLegacy(ctx context.Context, svcs []*v1.Service) {
	for _, svc := range svcs {
		key := lbsvc.Key(svc)
		a.mu.Lock()
		done := a.legacy[key] || a.legacyForbidden
		a.legacy[key] = true
		a.mu.Unlock()
		if done {
			continue
		}
		name := lbsvc.LeasePrefix + svc.Name
		leases := a.o.Client.CoordinationV1().Leases(svc.Namespace)
		l, err := leases.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsForbidden(err) {
			// vip's RBAC: Leases in the agent namespace only. Stop asking.
			a.mu.Lock()
			a.legacyForbidden = true
			a.mu.Unlock()
			a.log.Info("old per-Service Leases (kubevip-<service>) are left alone: no rights outside the agent namespace")
			return
		}
		if err != nil {
			if !apierrors.IsNotFound(err) {
				a.log.V(1).Info("looking for an old per-Service Lease", "service", key, "err", err)
			}
			continue
		}
		rv := l.ResourceVersion
		err = leases.Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &rv}})
		switch {
		case err == nil:
			a.log.Info("deleted the old per-Service Lease (ownership is per address now)", "service", key, "lease", svc.Namespace+"/"+name)
		case apierrors.IsNotFound(err), apierrors.IsForbidden(err), apierrors.IsConflict(err):
		default:
			a.log.V(1).Info("deleting an old per-Service Lease", "service", key, "err", err)
		}
	}
}
