package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/vip-lb/vip/pkg/dhcp"
	"github.com/vip-lb/vip/pkg/lbsvc"
)

// Event reasons of DHCP-sourced Services.
const (
	ReasonDHCPObtained = "DHCPLeaseObtained"
	ReasonDHCPFailed   = "DHCPFailed"
	ReasonDHCPLost     = "DHCPLeaseLost"
	ReasonDHCPNoIface  = "DHCPNoInterface"
	// ReasonDHCPLimit: this node already runs its cap of DHCP interfaces.
	ReasonDHCPLimit = "DHCPLimitReached"
)

// DHCP is what the agent needs from *dhcp.Manager: one lease per Service,
// taken by the node that owns the Service.
type DHCP interface {
	Ensure(key string, p dhcp.Params) error
	Lease(key string) (dhcp.Lease, bool)
	Running(key string) bool
	Stop(key string, release bool)
}

var _ DHCP = (*dhcp.Manager)(nil)

// wantsDHCP reports whether this agent obtains svc's address by DHCP: a
// 0.0.0.0 request, or the 0.0.0.0/32 marker as its namespace's pool.
func (a *Agent) wantsDHCP(svc *v1.Service) bool {
	if a.o.DHCP == nil || a.o.Mode != ModeARP {
		return false
	}
	a.mu.Lock()
	pools := a.ifaces
	a.mu.Unlock()
	return lbsvc.UsesDHCP(svc, pools)
}

// stopDHCP ends the lease client of key, if one runs here. release sends
// DHCPRELEASE (the Service is gone); otherwise the server keeps the lease
// for whichever node owns the Service next.
func (a *Agent) stopDHCP(key string, release bool) {
	a.mu.Lock()
	delete(a.dhcpRecorded, key)
	a.mu.Unlock()
	if a.o.DHCP != nil && a.o.DHCP.Running(key) {
		a.o.DHCP.Stop(key, release)
		a.log.Info("DHCP client stopped", "service", key, "released", release)
	}
}

// announceDHCP runs on the owner of a DHCP Service: it keeps the lease,
// publishes it on the Service Lease for vip-ccm, and announces the address
// once vip-ccm has put it in status.
func (a *Agent) announceDHCP(ctx context.Context, key string, svc *v1.Service, leaseName string, status []netip.Addr, reason string, changed bool) error {
	parent := a.interfaceFor(svc)
	if parent == "" {
		a.rec.Event(svc, v1.EventTypeWarning, ReasonDHCPNoIface,
			"address 0.0.0.0 (DHCP) needs an announcing interface: set vip_interface, the kube-vip.io/serviceInterface annotation or interface-<namespace> in the pools ConfigMap")
		return nil
	}
	var want netip.Addr
	for _, s := range status {
		if s.Is4() {
			want = s
			break
		}
	}
	if err := a.o.DHCP.Ensure(key, dhcp.Params{Parent: parent, Want: want}); err != nil {
		if errors.Is(err, dhcp.ErrLimit) {
			// Not retried in a loop: the Service is reconciled again on
			// its next change or resync, when another may have gone.
			a.rec.Eventf(svc, v1.EventTypeWarning, ReasonDHCPLimit,
				"node %s already runs its cap of DHCP interfaces; the address is not requested here", a.o.NodeName)
			a.withdrawAll(ctx, key, svc, "DHCP interface cap reached")
			return nil
		}
		return fmt.Errorf("starting DHCP client for %s: %w", key, err)
	}
	l, ok := a.o.DHCP.Lease(key)
	if !ok {
		a.withdrawAll(ctx, key, svc, "no DHCP lease")
		return nil // the client's events enqueue the Service again
	}
	if err := a.recordDHCP(ctx, key, a.o.Namespace, leaseName, l); err != nil {
		return err
	}
	if !slices.Contains(status, l.Addr) {
		// vip-ccm has not put the leased address in status yet (or status
		// still shows an older lease): nothing to announce for now.
		a.withdrawAll(ctx, key, svc, "status does not show the leased address "+l.Addr.String()+" yet")
		return nil
	}
	return a.announceOn(ctx, key, svc, []netip.Addr{l.Addr}, l.Link, reason, changed)
}

// recordDHCP writes the lease on the Service Lease when it changed.
func (a *Agent) recordDHCP(ctx context.Context, key, ns, leaseName string, l dhcp.Lease) error {
	rec := lbsvc.DHCPRecord{Addr: l.Addr, MAC: l.MAC, Expiry: l.Expiry()}
	ann := rec.Annotations()
	sig := ann[lbsvc.AnnotationDHCPAddress] + " " + ann[lbsvc.AnnotationDHCPMAC] + " " + ann[lbsvc.AnnotationDHCPExpiry]
	a.mu.Lock()
	same := a.dhcpRecorded[key] == sig
	a.mu.Unlock()
	if same {
		return nil
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"labels":      map[string]string{lbsvc.LabelDHCP: "true"},
		"annotations": ann,
	}})
	if err != nil {
		return err
	}
	_, err = a.o.Client.CoordinationV1().Leases(ns).Patch(ctx, leaseName, types.MergePatchType, patch, metav1.PatchOptions{})
	if apierrors.IsForbidden(err) {
		// kube-vip's RBAC grants update on Leases but not patch.
		err = a.updateDHCPRecord(ctx, ns, leaseName, ann)
	}
	if err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("recording the DHCP lease of %s: Lease %s/%s not created yet: %w", key, ns, leaseName, err)
		}
		return fmt.Errorf("recording the DHCP lease of %s on Lease %s/%s: %w", key, ns, leaseName, err)
	}
	a.mu.Lock()
	a.dhcpRecorded[key] = sig
	a.mu.Unlock()
	return nil
}

// updateDHCPRecord writes the record with read-modify-write, for a
// ServiceAccount that may update Leases but not patch them.
func (a *Agent) updateDHCPRecord(ctx context.Context, ns, leaseName string, ann map[string]string) error {
	leases := a.o.Client.CoordinationV1().Leases(ns)
	l, err := leases.Get(ctx, leaseName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if l.Labels == nil {
		l.Labels = map[string]string{}
	}
	l.Labels[lbsvc.LabelDHCP] = "true"
	if l.Annotations == nil {
		l.Annotations = map[string]string{}
	}
	maps.Copy(l.Annotations, ann)
	_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
	return err
}

// OnDHCPEvent turns a lease event into an Event on the Service and a
// reconcile.
func (a *Agent) OnDHCPEvent(key string, e dhcp.Event) {
	defer a.queue.Add(key)
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return
	}
	svc, err := a.svcs.Services(ns).Get(name)
	if err != nil {
		return
	}
	switch e.Kind {
	case dhcp.Obtained:
		a.rec.Eventf(svc, v1.EventTypeNormal, ReasonDHCPObtained, "Leased %s from %s on %s (MAC %s) until %s",
			e.Lease.Addr, e.Lease.Server, e.Lease.Link, e.Lease.MAC, e.Lease.Expiry().UTC().Format("15:04:05Z"))
	case dhcp.Failed:
		// The first failure and every tenth after it: the backoff already
		// spaces them, this keeps a long outage from flooding Events.
		if e.Failures != 1 && e.Failures%10 != 0 {
			return
		}
		kept := "no lease held"
		if e.Lease.Addr.IsValid() {
			kept = fmt.Sprintf("%s kept until %s", e.Lease.Addr, e.Lease.Expiry().UTC().Format("15:04:05Z"))
		}
		a.rec.Eventf(svc, v1.EventTypeWarning, ReasonDHCPFailed, "DHCP %s failed (%d in a row, retrying with backoff; %s): %v",
			e.Action, e.Failures, kept, e.Err)
	case dhcp.Lost:
		a.rec.Eventf(svc, v1.EventTypeWarning, ReasonDHCPLost, "DHCP lease lost on %s: %v; asking for the address again", a.o.NodeName, e.Err)
	}
}
