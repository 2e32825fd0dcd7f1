package ccm

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"k8s.io/cloud-provider/api"

	"github.com/vip-lb/vip/pkg/ipam"
	"github.com/vip-lb/vip/pkg/lbsvc"
)

// Event reasons of DHCP-sourced Services.
const (
	ReasonDHCPAddressRejected = "DHCPAddressRejected"
)

// DHCP hand-over: the vip-agent that owns a 0.0.0.0 Service takes a DHCP
// lease and records it on the Service's Lease (lbsvc.DHCPRecord). vip-ccm
// watches those Leases, checks the address like any requested one and
// returns it from EnsureLoadBalancer, so status stays vip-ccm's alone. A
// change of the record queues the Service for the service controller
// (resync), which writes the status; a pending Service is retried quickly
// (dhcpPending) in case the Lease event came first.

// dhcpWaitMin and dhcpWaitMax bound the retry delay of a Service waiting
// for its lease: quick at first (the owner usually leases within a second),
// then slower.
const (
	dhcpWaitMin = 250 * time.Millisecond
	dhcpWaitMax = 5 * time.Second
)

// dhcpState is vip-ccm's memory of one DHCP Service.
type dhcpState struct {
	waits   int        // consecutive pending answers
	told    string     // the last Event given, to say it once
	granted netip.Addr // the address last returned
}

func (lb *LoadBalancer) startDHCP(f informers.SharedInformerFactory) {
	li := f.Coordination().V1().Leases()
	lb.leases = li.Lister()
	// Every Lease of the agent namespace: a DHCP record queues its Service
	// for the service controller; the rest (heartbeats, control-plane lock,
	// conflict records) go to the never-assignable set.
	handle := func(o any, deleted bool) {
		l, ok := objOf(o).(*coordv1.Lease)
		if !ok {
			return
		}
		if strings.HasPrefix(l.Name, lbsvc.AddressLeasePrefix) {
			return // renewed often, carries nothing vip-ccm uses
		}
		if strings.HasPrefix(l.Name, lbsvc.DHCPLeasePrefix) {
			if k := l.Annotations[lbsvc.AnnotationLeaseService]; k != "" {
				lb.resync(k)
			}
			return
		}
		if deleted {
			lb.onAgentLease(l.Name, nil)
		} else {
			lb.onAgentLease(l.Name, l)
		}
	}
	enqueue := func(o any) { handle(o, false) }
	_, _ = li.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, o any) { enqueue(o) },
		DeleteFunc: func(o any) { handle(o, true) },
	})
	// Without the Lease rule (kube-vip-cloud-provider's RBAC has no watch)
	// vip-ccm serves without DHCP records and agent-published facts, and
	// says so once.
	denied := quietForbidden(li.Informer(), "Leases of the agent namespace could not be read; serving without DHCP records, "+
		"agent-published node addresses and conflict records", "get/list/watch on coordination.k8s.io leases in the agent namespace")
	lb.synced = append(lb.synced, func() bool { return denied.Load() || li.Informer().HasSynced() })
}

// dhcpStatus handles a 0.0.0.0 request: it returns the address the owning
// agent leased, once that is recorded and passes the checks; until then
// the Service stays pending and is retried soon.
func (lb *LoadBalancer) dhcpStatus(svc *v1.Service) (*v1.LoadBalancerStatus, error) {
	rec, ok, err := lb.dhcpRecord(svc)
	if err != nil {
		return lb.dhcpPending(svc, v1.EventTypeWarning, ReasonDHCPAddressRejected, err.Error())
	}
	if !ok {
		return lb.dhcpPending(svc, v1.EventTypeNormal, ReasonWaitingForDHCP, "address 0.0.0.0 requested: waiting for a DHCP lease")
	}
	lb.mu.Lock()
	refusal, err := lb.grantDHCPLocked(svc, rec)
	lb.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if refusal != "" {
		return lb.dhcpPending(svc, v1.EventTypeWarning, ReasonDHCPAddressRejected, refusal)
	}
	return statusFor([]netip.Addr{rec.Addr}), nil
}

// grantDHCPLocked checks a leased address like a requested one and records
// it; a non-empty refusal says why it cannot be used.
func (lb *LoadBalancer) grantDHCPLocked(svc *v1.Service, rec lbsvc.DHCPRecord) (refusal string, err error) {
	key := lbsvc.Key(svc)
	if err := lb.restoreLocked(); err != nil {
		return "", err
	}
	if why := lb.whyForbiddenLocked([]netip.Addr{rec.Addr}); why != "" || lb.forbidden(rec.Addr) {
		return "leased address " + rec.Addr.String() + " refused" + why, nil
	}
	// Pool rules: a leased address inside a pool of another namespace is
	// refused like a requested one (a DHCP server's range normally lies
	// outside the pools, so allow-static-outside-pools does not apply).
	if err := lb.cfg.CheckRequested(svc.Namespace, rec.Addr); errors.Is(err, ipam.ErrOtherPool) {
		return "leased address refused: " + err.Error(), nil
	}
	for _, h := range lb.alloc.Holders(rec.Addr) {
		if h != key {
			who := h
			if hns, _, _ := strings.Cut(h, "/"); hns != svc.Namespace {
				who = "a Service of another namespace"
			}
			return fmt.Sprintf("leased address %s is already held by %s", rec.Addr, who), nil
		}
	}
	lb.alloc.Restore(ipamRequest(svc, nil, nil), []netip.Addr{rec.Addr}, false)
	st := lb.dhcp[key]
	if st == nil {
		st = &dhcpState{}
		lb.dhcp[key] = st
	}
	st.waits, st.told = 0, ""
	if st.granted != rec.Addr {
		st.granted = rec.Addr
		lb.recorder.Eventf(svc, v1.EventTypeNormal, ReasonAllocated, "Assigned %s (DHCP lease, MAC %s)", rec.Addr, rec.MAC)
		lb.metrics.allocations.Inc()
	}
	return "", nil
}

// dhcpRecord reads the record on the Service's Lease.
func (lb *LoadBalancer) dhcpRecord(svc *v1.Service) (lbsvc.DHCPRecord, bool, error) {
	if lb.leases == nil {
		return lbsvc.DHCPRecord{}, false, nil
	}
	// The owning agent writes the record on its per-Service Lease in the
	// agent namespace, which tenants cannot write.
	l, err := lb.leases.Leases(lb.opts.AgentNamespace).Get(lbsvc.DHCPLeaseName(svc.Namespace, svc.Name))
	if err != nil {
		return lbsvc.DHCPRecord{}, false, nil
	}
	if l.Annotations[lbsvc.AnnotationLeaseService] != lbsvc.Key(svc) {
		return lbsvc.DHCPRecord{}, false, fmt.Errorf("the Lease %s/%s belongs to Service %q, not %q", l.Namespace, l.Name,
			l.Annotations[lbsvc.AnnotationLeaseService], lbsvc.Key(svc))
	}
	return lbsvc.ParseDHCPRecord(l.Annotations)
}

// dhcpPending records an Event once per distinct message and asks for a
// retry, quickly at first.
func (lb *LoadBalancer) dhcpPending(svc *v1.Service, typ, reason, msg string) (*v1.LoadBalancerStatus, error) {
	key := lbsvc.Key(svc)
	lb.mu.Lock()
	st := lb.dhcp[key]
	if st == nil {
		st = &dhcpState{}
		lb.dhcp[key] = st
	}
	tell := st.told != reason+msg
	st.told = reason + msg
	delay := min(dhcpWaitMin<<min(st.waits, 8), dhcpWaitMax)
	st.waits++
	lb.mu.Unlock()
	if tell {
		lb.recorder.Event(svc, typ, reason, msg)
		if typ == v1.EventTypeWarning {
			lb.metrics.failures.WithLabelValues(reason).Inc()
		}
	}
	return nil, api.NewRetryError(msg, min(delay, lb.opts.RetryAfter))
}

// forgetDHCPLocked drops what vip-ccm remembers of a deleted Service.
func (lb *LoadBalancer) forgetDHCPLocked(key string) { delete(lb.dhcp, key) }
