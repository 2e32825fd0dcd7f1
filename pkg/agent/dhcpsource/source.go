// Package dhcpsource is the agent's DHCP plug-in: an agent.AddressSource
// that obtains the address of a Service requesting 0.0.0.0 (or whose
// namespace's pool is the 0.0.0.0/32 marker) from the network's DHCP server,
// on a macvlan of the Service's announcing interface (pkg/dhcp runs the
// clients). The node that owns the Service (elected on the Lease
// vip-dhcp-<namespace>-<service> in the agent namespace) keeps the lease and
// records it on that Lease (lbsvc.DHCPRecord), where vip-ccm reads it to
// write the Service's status; the agent announces the address once status
// shows it. Lease changes and failures become Events on the Service.
//
// internal/agentapp builds it in layer 2 mode.
package dhcpsource

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"sync"

	"github.com/go-logr/logr"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"

	"github.com/vip-lb/vip/pkg/agent"
	"github.com/vip-lb/vip/pkg/dhcp"
	"github.com/vip-lb/vip/pkg/ipam"
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

// Clients is what the source needs from *dhcp.Manager: one lease per
// Service key.
type Clients interface {
	Ensure(key string, p dhcp.Params) error
	Lease(key string) (dhcp.Lease, bool)
	Running(key string) bool
	Stop(key string, release bool)
}

var (
	_ Clients             = (*dhcp.Manager)(nil)
	_ agent.AddressSource = (*Source)(nil)
)

// Options configure a Source.
type Options struct {
	// Client writes the DHCP record on the Service's Lease.
	Client   kubernetes.Interface
	Clients  Clients
	NodeName string
	// Service returns the Service of a key from the agent's cache (nil when
	// gone) and Enqueue reconciles a key: lease events use both.
	Service  func(key string) *v1.Service
	Enqueue  func(key string)
	Recorder record.EventRecorder
	Logger   logr.Logger
}

// Source is the DHCP agent.AddressSource.
type Source struct {
	o Options

	mu       sync.Mutex
	recorded map[string]string // Service key -> DHCP record last written on its Lease
}

// New returns a Source over o.Clients.
func New(o Options) *Source {
	if o.Recorder == nil {
		o.Recorder = &record.FakeRecorder{}
	}
	if o.Service == nil {
		o.Service = func(string) *v1.Service { return nil }
	}
	if o.Enqueue == nil {
		o.Enqueue = func(string) {}
	}
	o.Logger = o.Logger.WithValues("node", o.NodeName)
	return &Source{o: o, recorded: map[string]string{}}
}

// String names the source.
func (s *Source) String() string { return "DHCP" }

// Claims reports whether svc's IPv4 address comes from DHCP: a 0.0.0.0
// request, or the 0.0.0.0/32 marker as its namespace's pool.
func (s *Source) Claims(svc *v1.Service, pools *ipam.Config) bool {
	return lbsvc.UsesDHCP(svc, pools)
}

// LeaseName is vip-dhcp-<namespace>-<service>.
func (s *Source) LeaseName(svc *v1.Service) string {
	return lbsvc.DHCPLeaseName(svc.Namespace, svc.Name)
}

// Release ends the lease client of key, if one runs here. gone sends
// DHCPRELEASE (the Service is gone); otherwise the server keeps the lease
// for whichever node owns the Service next.
func (s *Source) Release(key string, gone bool) {
	s.mu.Lock()
	delete(s.recorded, key)
	s.mu.Unlock()
	if s.o.Clients.Running(key) {
		s.o.Clients.Stop(key, gone)
		s.o.Logger.Info("DHCP client stopped", "service", key, "released", gone)
	}
}

// Acquire runs on the owner of a DHCP Service: it keeps the lease on a
// macvlan of req.Interface and publishes it on the Service Lease for
// vip-ccm.
func (s *Source) Acquire(ctx context.Context, req agent.SourceRequest) (agent.Supplied, error) {
	svc := req.Service
	if req.Interface == "" {
		s.o.Recorder.Event(svc, v1.EventTypeWarning, ReasonDHCPNoIface,
			"address 0.0.0.0 (DHCP) needs an announcing interface: set vip_interface, the kube-vip.io/serviceInterface annotation or interface-<namespace> in the pools ConfigMap")
		return agent.Supplied{}, nil
	}
	var want netip.Addr
	for _, a := range req.Status {
		if a.Is4() {
			want = a
			break
		}
	}
	if err := s.o.Clients.Ensure(req.Key, dhcp.Params{Parent: req.Interface, Want: want}); err != nil {
		if errors.Is(err, dhcp.ErrLimit) {
			// Not retried in a loop: the Service is reconciled again on
			// its next change or resync, when another may have gone.
			s.o.Recorder.Eventf(svc, v1.EventTypeWarning, ReasonDHCPLimit,
				"node %s already runs its cap of DHCP interfaces; the address is not requested here", s.o.NodeName)
			return agent.Supplied{Withdraw: "DHCP interface cap reached"}, nil
		}
		return agent.Supplied{}, fmt.Errorf("starting DHCP client for %s: %w", req.Key, err)
	}
	l, ok := s.o.Clients.Lease(req.Key)
	if !ok {
		return agent.Supplied{Withdraw: "no DHCP lease"}, nil // the client's events enqueue the Service again
	}
	if err := s.record(ctx, req.Key, req.Namespace, req.Lease, l); err != nil {
		return agent.Supplied{}, err
	}
	return agent.Supplied{Addr: l.Addr, Interface: l.Link}, nil
}

// record writes the lease on the Service Lease when it changed.
func (s *Source) record(ctx context.Context, key, ns, leaseName string, l dhcp.Lease) error {
	rec := lbsvc.DHCPRecord{Addr: l.Addr, MAC: l.MAC, Expiry: l.Expiry()}
	ann := rec.Annotations()
	sig := ann[lbsvc.AnnotationDHCPAddress] + " " + ann[lbsvc.AnnotationDHCPMAC] + " " + ann[lbsvc.AnnotationDHCPExpiry]
	s.mu.Lock()
	same := s.recorded[key] == sig
	s.mu.Unlock()
	if same {
		return nil
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"labels":      map[string]string{lbsvc.LabelDHCP: "true"},
		"annotations": ann,
	}})
	if err != nil {
		return fmt.Errorf("encoding the DHCP record of %s: %w", key, err)
	}
	_, err = s.o.Client.CoordinationV1().Leases(ns).Patch(ctx, leaseName, types.MergePatchType, patch, metav1.PatchOptions{})
	if apierrors.IsForbidden(err) {
		// kube-vip's RBAC grants update on Leases but not patch.
		err = s.update(ctx, ns, leaseName, ann)
	}
	if err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("recording the DHCP lease of %s: Lease %s/%s not created yet: %w", key, ns, leaseName, err)
		}
		return fmt.Errorf("recording the DHCP lease of %s on Lease %s/%s: %w", key, ns, leaseName, err)
	}
	s.mu.Lock()
	s.recorded[key] = sig
	s.mu.Unlock()
	return nil
}

// update writes the record with read-modify-write, for a ServiceAccount
// that may update Leases but not patch them.
func (s *Source) update(ctx context.Context, ns, leaseName string, ann map[string]string) error {
	leases := s.o.Client.CoordinationV1().Leases(ns)
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

// OnEvent turns a lease event of the DHCP client of key into an Event on
// the Service and a reconcile (dhcp.Options.OnEvent).
func (s *Source) OnEvent(key string, e dhcp.Event) {
	defer s.o.Enqueue(key)
	svc := s.o.Service(key)
	if svc == nil {
		return
	}
	switch e.Kind {
	case dhcp.Obtained:
		s.o.Recorder.Eventf(svc, v1.EventTypeNormal, ReasonDHCPObtained, "Leased %s from %s on %s (MAC %s) until %s",
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
		s.o.Recorder.Eventf(svc, v1.EventTypeWarning, ReasonDHCPFailed, "DHCP %s failed (%d in a row, retrying with backoff; %s): %v",
			e.Action, e.Failures, kept, e.Err)
	case dhcp.Lost:
		s.o.Recorder.Eventf(svc, v1.EventTypeWarning, ReasonDHCPLost, "DHCP lease lost on %s: %v; asking for the address again", s.o.NodeName, e.Err)
	}
}
