package ccm

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/klog/v2"

	"github.com/vip-lb/vip/pkg/lbsvc"
)

// ReasonAddressInUse: another host answered for the address (an agent's
// conflict record vip-conflict-<addr>); vip-ccm takes it out of status and
// refuses it for the quarantine period.
const ReasonAddressInUse = "AddressInUse"

// conflict is a quarantined address.
type conflict struct {
	mac   string
	until time.Time
}

// setConflictLocked records or drops the conflict record of a Lease of the
// agent namespace (nil: deleted). It returns the address when a new or
// renewed quarantine starts, so the caller queues the Services holding it.
func (lb *LoadBalancer) setConflictLocked(l *coordv1.Lease, name string, now time.Time) (netip.Addr, bool) {
	a, ok := lbsvc.AddressFromLeaseName(name)
	if !ok || !strings.HasPrefix(name, lbsvc.ConflictLeasePrefix) {
		return netip.Addr{}, false
	}
	if l == nil {
		if _, had := lb.conflicts[a]; had {
			delete(lb.conflicts, a)
			lb.alloc.SetForbidden(lb.forbidden)
		}
		return netip.Addr{}, false
	}
	if ann := strings.TrimSpace(l.Annotations[lbsvc.AnnotationAddress]); ann != "" {
		if b, err := netip.ParseAddr(ann); err != nil || b.Unmap() != a {
			return netip.Addr{}, false // a record must name the address of its name
		}
	}
	detected := l.CreationTimestamp.Time
	if l.Spec.RenewTime != nil {
		detected = l.Spec.RenewTime.Time
	}
	until := detected.Add(lb.opts.ConflictQuarantine)
	if !until.After(now) {
		return netip.Addr{}, false // an old record: the address is usable again
	}
	old, had := lb.conflicts[a]
	lb.conflicts[a] = conflict{mac: l.Annotations[lbsvc.AnnotationMAC], until: until}
	lb.trustQueue.AddAfter(expireKey+a.String(), until.Sub(now)+time.Second)
	return a, !had || !old.until.Equal(until)
}

// quarantinedLocked reports whether a is quarantined now.
func (lb *LoadBalancer) quarantinedLocked(a netip.Addr) (conflict, bool) {
	c, ok := lb.conflicts[a]
	if ok && !c.until.After(lb.now()) {
		return conflict{}, false
	}
	return c, ok
}

// expireKey prefixes the trust queue's keys: the end of a quarantine.
const expireKey = "expire:"

// expireConflict drops a quarantine whose time is over, so that pool picks
// see the address again, and queues the Services that request the address
// for the service controller, which gives it back to those left pending.
func (lb *LoadBalancer) expireConflict(addr string) error {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return nil
	}
	lb.mu.Lock()
	if c, ok := lb.conflicts[a]; ok && !c.until.After(lb.now()) {
		delete(lb.conflicts, a)
		lb.alloc.SetForbidden(lb.forbidden)
		klog.InfoS("address quarantine over", "address", a)
	}
	c, still := lb.quarantinedLocked(a)
	if still {
		// Renewed meanwhile: a later expiry queued for the same key was
		// merged into this earlier one, so arm it again.
		lb.trustQueue.AddAfter(expireKey+a.String(), c.until.Sub(lb.now())+time.Second)
	}
	lb.mu.Unlock()
	if still || lb.svcs == nil {
		return nil
	}
	if !lb.hasSynced() {
		return fmt.Errorf("informers not synced")
	}
	all, err := lb.svcs.List(labels.Everything())
	if err != nil {
		return err
	}
	for _, svc := range all {
		req, rerr := lbsvc.Requested(svc)
		// Those holding it already are queued too (the cache may not show
		// their status yet): their sync writes nothing.
		if rerr == nil && slices.Contains(req.Addrs, a) && svc.DeletionTimestamp == nil && lbsvc.Wants(svc, lb.opts.Class) {
			lb.resync(lbsvc.Key(svc))
		}
	}
	return nil
}

// dropQuarantinedLocked takes the addresses quarantined since svc got them
// out of what it holds, with a Warning AddressInUse for each (naming the
// MAC, never another Service), so that the assignment that follows gives
// another address where the request allows: a pool Service gets one now, a
// static one stays pending with AddressForbidden until the quarantine ends.
func (lb *LoadBalancer) dropQuarantinedLocked(svc *v1.Service) {
	key := lbsvc.Key(svc)
	held := lb.alloc.Assigned(key)
	keep := slices.DeleteFunc(slices.Clone(held), func(a netip.Addr) bool {
		c, q := lb.quarantinedLocked(a)
		if q {
			lb.recorder.Eventf(svc, v1.EventTypeWarning, ReasonAddressInUse,
				"%s is answered by MAC %s, which is not a vip node: removed from status, refused until %s",
				a, c.mac, c.until.UTC().Format(time.RFC3339))
			lb.metrics.failures.WithLabelValues(ReasonAddressInUse).Inc()
		}
		return q
	})
	if len(keep) < len(held) {
		lb.alloc.Restore(ipamRequest(svc, nil, nil), keep, lb.cfg != nil && lb.cfg.Shareable(svc.Namespace))
	}
}

// withoutQuarantined returns svc's status without the addresses quarantined
// now, and whether any was dropped: the service controller writes it when
// no other address can be given.
func (lb *LoadBalancer) withoutQuarantined(svc *v1.Service) (*v1.LoadBalancerStatus, bool) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	st := svc.Status.LoadBalancer.DeepCopy()
	st.Ingress = slices.DeleteFunc(st.Ingress, func(in v1.LoadBalancerIngress) bool {
		a, err := netip.ParseAddr(in.IP)
		_, q := lb.quarantinedLocked(a.Unmap())
		return err == nil && q
	})
	return st, len(st.Ingress) < len(svc.Status.LoadBalancer.Ingress)
}
