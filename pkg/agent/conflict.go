package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vip-lb/vip/pkg/lbsvc"
)

// ReasonAddressInUse: another host on the link answered for the address.
const ReasonAddressInUse = "AddressInUse"

// conflictRetry is how often an address found in use is probed again.
const conflictRetry = 30 * time.Second

// Labels of conflict records (the same keys as the election's Leases).
const (
	labelManagedBy = "app.kubernetes.io/managed-by"
	managedByValue = "vip-agent"
	labelRole      = "vip.io/role"
	roleConflict   = "conflict"
)

// errInUse stops an announcement: another host answered the probe.
var errInUse = errors.New("address in use by another host")

// probeFirst asks the link, before the first announcement of an address no
// vip node held (fresh) or one found in use before, whether another host
// answers for it. It returns errInUse when one does (the address is then
// not announced); a probe that cannot run does not hold the address back.
func (a *Agent) probeFirst(ctx context.Context, addr netip.Addr, svcs []*v1.Service, fresh bool) error {
	if a.o.Prober == nil || a.o.Mode != ModeARP {
		return nil
	}
	key := addrKey(addr)
	held := a.desired.Has(key, addr)
	a.mu.Lock()
	if fresh {
		// Remembered until the first announcement: the Services may not
		// be ready to be announced on this very reconcile.
		a.unprobed[addr] = true
	}
	_, conflicted := a.conflicts[addr]
	unprobed := a.unprobed[addr]
	a.mu.Unlock()
	if held || !(unprobed || conflicted) {
		return nil
	}
	t0 := a.o.Clock.Now()
	mac, err := a.o.Prober.Probe(ctx, addr, a.interfaceFor(svcs[0]))
	a.metrics.probe(a.o.Clock.Since(t0))
	if err != nil {
		a.log.Info("could not probe the address before announcing it; announcing", "vip", addr, "err", err)
		a.mu.Lock()
		delete(a.unprobed, addr)
		a.mu.Unlock()
		return nil
	}
	if mac == nil {
		a.mu.Lock()
		delete(a.conflicts, addr)
		delete(a.unprobed, addr)
		a.mu.Unlock()
		if conflicted {
			a.log.Info("no other host answers for the address any more", "vip", addr)
		}
		return nil
	}
	a.mu.Lock()
	first := a.conflicts[addr] != mac.String()
	a.conflicts[addr] = mac.String()
	a.mu.Unlock()
	a.queue.AddAfter(key, conflictRetry)
	if first {
		a.log.Info("address in use by another host on the link: not announcing it", "vip", addr, "mac", mac.String())
		for _, svc := range svcs {
			a.rec.Eventf(svc, v1.EventTypeWarning, ReasonAddressInUse,
				"Address %s is in use by another host on the link (MAC %s): %s does not announce it", addr, mac, a.o.NodeName)
		}
	}
	if err := a.recordConflict(ctx, addr, mac); err != nil {
		return err
	}
	return errInUse
}

// recordConflict creates or refreshes the conflict record Lease
// vip-conflict-<addr> in the agent namespace, which vip-ccm reads.
func (a *Agent) recordConflict(ctx context.Context, addr netip.Addr, mac net.HardwareAddr) error {
	leases := a.o.Client.CoordinationV1().Leases(a.o.Namespace)
	name := lbsvc.ConflictLeaseName(addr)
	now := metav1.NewMicroTime(a.o.Clock.Now())
	fill := func(l *coordv1.Lease) {
		if l.Labels == nil {
			l.Labels = map[string]string{}
		}
		l.Labels[labelManagedBy] = managedByValue
		l.Labels[labelRole] = roleConflict
		if l.Annotations == nil {
			l.Annotations = map[string]string{}
		}
		l.Annotations[lbsvc.AnnotationAddress] = addr.String()
		l.Annotations[lbsvc.AnnotationMAC] = mac.String()
		l.Annotations[lbsvc.AnnotationNode] = a.o.NodeName
		node := a.o.NodeName
		l.Spec.HolderIdentity = &node
		l.Spec.RenewTime = &now
	}
	l := &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: a.o.Namespace}}
	fill(l)
	_, err := leases.Create(ctx, l, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		cur, gerr := leases.Get(ctx, name, metav1.GetOptions{})
		if gerr != nil {
			return fmt.Errorf("reading conflict record %s: %w", name, gerr)
		}
		fill(cur)
		_, err = leases.Update(ctx, cur, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("writing conflict record %s/%s: %w", a.o.Namespace, name, err)
	}
	return nil
}

// forgetProbe drops what this node remembers about probing addr (it no
// longer holds its Lease).
func (a *Agent) forgetProbe(addr netip.Addr) {
	a.mu.Lock()
	delete(a.unprobed, addr)
	delete(a.conflicts, addr)
	a.mu.Unlock()
}
