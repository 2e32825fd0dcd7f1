package agent

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	v1 "k8s.io/api/core/v1"

	"github.com/vip-lb/vip/pkg/lbsvc"
)

// A Service whose address comes from the AddressSource (plugins.go) is
// elected per Service: its address is not known before the source obtains
// it, so the owner is decided on the Lease the source names (DHCP:
// vip-dhcp-<namespace>-<service> in the agent namespace).

// sourceLeaseKnown reports whether key was elected as a sourced Service.
func (a *Agent) sourceLeaseKnown(key string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.leases[key]
	return ok
}

// syncSourced elects the owner of a sourced Service; the owner obtains and
// announces its address, every other node withdraws it and stops asking.
func (a *Agent) syncSourced(ctx context.Context, key string, svc *v1.Service) error {
	addrs := announceable(lbsvc.IngressIPs(svc))
	lease := a.o.Source.LeaseName(svc)
	a.mu.Lock()
	a.leases[key] = lease
	a.mu.Unlock()
	if a.o.Elector.Fenced() {
		a.withdrawAll(ctx, key, svc, "this node cannot renew its heartbeat (self-fenced)")
		a.release(key, false)
		return nil
	}
	d, err := a.elect(ctx, key, lease, key, a.candidates(svc))
	if err != nil {
		return err
	}
	switch {
	case d.HandOffTo != "":
		a.withdrawAll(ctx, key, svc, "handing over: "+d.Reason)
		a.release(key, false)
		if err := a.o.Elector.Release(ctx, a.o.Namespace, lease, d.HandOffTo); err != nil {
			return fmt.Errorf("handing %s to %s: %w", key, d.HandOffTo, err)
		}
		return nil
	case d.Announce:
		return a.announceSourced(ctx, key, svc, lease, addrs, d.Reason, d.Changed)
	default:
		why := "owned by " + d.Holder
		if d.Holder == "" {
			why = "no owner elected yet"
		}
		a.withdrawAll(ctx, key, svc, why)
		a.release(key, false)
		return nil
	}
}

// announceSourced runs on the owner of a sourced Service: the source
// obtains the address (and publishes it for vip-ccm), and the address is
// announced once vip-ccm has put it in status.
func (a *Agent) announceSourced(ctx context.Context, key string, svc *v1.Service, lease string, status []netip.Addr, reason string, changed bool) error {
	s, err := a.o.Source.Acquire(ctx, SourceRequest{
		Key: key, Service: svc, Interface: a.interfaceFor(svc), Status: status,
		Namespace: a.o.Namespace, Lease: lease,
	})
	if err != nil {
		return fmt.Errorf("obtaining the address of %s by %s: %w", key, a.o.Source, err)
	}
	if !s.Addr.IsValid() {
		if s.Withdraw != "" {
			a.withdrawAll(ctx, key, svc, s.Withdraw)
		}
		return nil // the source's events enqueue the Service again
	}
	if !slices.Contains(status, s.Addr) {
		// vip-ccm has not put the obtained address in status yet (or status
		// still shows an older one): nothing to announce for now.
		a.withdrawAll(ctx, key, svc, "status does not show the leased address "+s.Addr.String()+" yet")
		return nil
	}
	return a.announceOn(ctx, key, svc, []netip.Addr{s.Addr}, s.Interface, reason, changed)
}
