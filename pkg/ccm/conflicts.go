package ccm

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"
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
// renewed quarantine starts, so the caller takes it out of status.
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

// Keys of the trust queue.
const (
	evictKey  = "evict:"
	expireKey = "expire:"
)

// expireConflict drops a quarantine whose time is over, so that pool picks
// see the address again, and gives the address back to the Services that
// request it and were left pending (nothing else would: their status was
// emptied outside the service controller, which does not retry them).
func (lb *LoadBalancer) expireConflict(ctx context.Context, addr string) error {
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
	var firstErr error
	for _, svc := range all {
		req, rerr := lbsvc.Requested(svc)
		if rerr != nil || !slices.Contains(req.Addrs, a) || len(svc.Status.LoadBalancer.Ingress) > 0 ||
			svc.DeletionTimestamp != nil || !lbsvc.Wants(svc, lb.opts.Class) {
			continue
		}
		st, err := lb.EnsureLoadBalancer(ctx, "", svc, nil)
		if err != nil || st == nil || len(st.Ingress) == 0 {
			continue // still refused for another reason: its Events say why
		}
		if err := lb.writeStatus(ctx, svc, st); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

// evictConflict takes a quarantined address out of the status of every
// Service vip serves that carries it, with a Warning AddressInUse on each
// (naming the MAC, never another Service), and lets each get a new address
// where its request allows.
func (lb *LoadBalancer) evictConflict(ctx context.Context, a netip.Addr) error {
	if lb.svcs == nil || !lb.hasSynced() {
		return fmt.Errorf("informers not synced")
	}
	lb.mu.Lock()
	c, ok := lb.quarantinedLocked(a)
	holders := lb.alloc.Holders(a)
	lb.mu.Unlock()
	if !ok {
		return nil
	}
	var firstErr error
	for _, key := range holders {
		ns, name, _ := cache.SplitMetaNamespaceKey(key)
		svc, err := lb.svcs.Services(ns).Get(name)
		if err != nil || !lbsvc.Wants(svc, lb.opts.Class) {
			continue
		}
		lb.mu.Lock()
		keep := slices.DeleteFunc(lb.alloc.Assigned(key), func(x netip.Addr) bool { return x == a })
		lb.alloc.Restore(ipamRequest(svc, nil, nil), keep, lb.cfg != nil && lb.cfg.Shareable(svc.Namespace))
		lb.mu.Unlock()
		lb.recorder.Eventf(svc, v1.EventTypeWarning, ReasonAddressInUse,
			"%s is answered by MAC %s, which is not a vip node: removed from status, refused until %s",
			a, c.mac, c.until.UTC().Format(time.RFC3339))
		lb.metrics.failures.WithLabelValues(ReasonAddressInUse).Inc()
		st := statusFor(keep)
		if len(keep) == 0 {
			// A pool Service gets another address now; a static one stays
			// pending with AddressForbidden until the quarantine ends.
			if got, err := lb.EnsureLoadBalancer(ctx, "", svc, nil); err == nil && got != nil {
				st = got
			}
		}
		if err := lb.writeStatus(ctx, svc, st); err != nil && firstErr == nil {
			firstErr = fmt.Errorf("removing %s: %w", a, err)
		}
	}
	return firstErr
}
