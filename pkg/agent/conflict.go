package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/vip-lb/vip/pkg/election"
	"github.com/vip-lb/vip/pkg/lbsvc"
)

// ReasonAddressInUse: another host on the link answered for the address.
const ReasonAddressInUse = "AddressInUse"

// conflictRetry is how often an address found in use is probed again.
const conflictRetry = 30 * time.Second

// Labels of conflict records (the same keys as the election's Leases).
const (
	labelManagedBy = lbsvc.LabelLeaseManagedBy
	managedByValue = lbsvc.LeaseManagedByAgent
	labelRole      = lbsvc.LabelLeaseRole
	roleConflict   = lbsvc.LeaseRoleConflict
)

// errInUse stops an announcement: another host answered the probe.
var errInUse = errors.New("address in use by another host")

// Marks on the per-address Lease vip-<addr>: the time a vip node first
// announced the address after asking the link, and which node it was. A
// takeover of a Lease carrying a mark later than any conflict record is
// not probed (failover stays fast); anything else is.
const (
	AnnotationAnnouncedAt = "vip.io/announced-at"
	AnnotationAnnouncedBy = "vip.io/announced-by"
)

// probeFirst asks the link whether another host answers for addr before
// this agent announces it, unless the address was already announced by a
// vip node. The rule (docs/security.md, "Ask the wire first"): an address
// is announced without a probe only when this agent process already
// announces it, or when its Lease was not acquired fresh (a vip node held
// it) and carries an announced mark later than the address's conflict
// record (if any). A Lease acquired fresh, a Lease without the mark (never
// announced, e.g. an agent restarted after finding the address in use), a
// conflict record newer than the mark, or a conflict this process saw all
// force a probe.
//
// The probe runs beside the workers (probing.go): while it runs,
// probeFirst returns errProbing and the probe's end reconciles the address
// again. It returns errInUse when another host answers (the address is then not
// announced), and probed=true when the link was asked and nobody answered:
// the caller then marks the Lease once the address is announced. A probe
// that cannot run does not hold the address back; a Lease or record that
// cannot be read does (the reconcile is retried).
func (a *Agent) probeFirst(ctx context.Context, addr netip.Addr, svcs []*v1.Service, fresh bool) (probed bool, err error) {
	if a.o.Prober == nil || a.o.Mode != ModeARP {
		return false, nil
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
	if held {
		return false, nil
	}
	why := ""
	switch {
	case conflicted:
		why = "another host answered before"
	case unprobed:
		why = "no vip node held the address"
	default:
		if why, err = a.probeReason(ctx, addr); err != nil {
			return false, err
		}
		if why == "" {
			return false, nil
		}
	}
	mac, err, ok := a.probeResult(addr, a.interfaceFor(svcs[0]))
	if !ok {
		return false, errProbing
	}
	if err != nil {
		a.log.Info("could not probe the address before announcing it; announcing", "vip", addr, "why", why, "err", err)
		a.mu.Lock()
		delete(a.unprobed, addr)
		a.mu.Unlock()
		return false, nil
	}
	if mac == nil {
		a.mu.Lock()
		delete(a.conflicts, addr)
		delete(a.unprobed, addr)
		a.mu.Unlock()
		if conflicted || why != "no vip node held the address" {
			a.log.Info("probed: no other host answers for the address", "vip", addr, "why", why)
		}
		return true, nil
	}
	if holder := a.otherHolder(ctx, addr); holder != "" {
		// Two agents both held the Lease for a moment (a takeover while
		// this one acquired it): the answer is the vip node that holds
		// it now, not a foreign host. Step back; no conflict record, or
		// vip-ccm would take the address away from its Service.
		a.log.Info("the address's Lease moved to another vip node while probing: not announcing", "vip", addr, "holder", holder, "mac", mac.String())
		return false, errInUse
	}
	if a.o.NodeWithMAC != nil {
		if node := a.o.NodeWithMAC(mac); node != "" {
			// A vip node answered: the address is still bound there (its
			// agent was killed and has not cleaned up yet, or is cut off).
			// That is no foreign host: take the address over (the
			// gratuitous ARPs move the clients), and record no conflict,
			// or vip-ccm would take it away from its Service.
			a.log.Info("a vip node still answers for the address (left bound there); announcing it", "vip", addr, "node", node, "mac", mac.String(), "why", why)
			a.mu.Lock()
			delete(a.conflicts, addr)
			delete(a.unprobed, addr)
			a.mu.Unlock()
			return true, nil
		}
	}
	a.mu.Lock()
	first := a.conflicts[addr] != mac.String()
	a.conflicts[addr] = mac.String()
	a.mu.Unlock()
	a.queue.AddAfter(key, conflictRetry)
	if first {
		a.log.Info("address in use by another host on the link: not announcing it", "vip", addr, "mac", mac.String(), "why", why)
		for _, svc := range svcs {
			a.rec.Eventf(svc, v1.EventTypeWarning, ReasonAddressInUse,
				"Address %s is in use by another host on the link (MAC %s): %s does not announce it", addr, mac, a.o.NodeName)
		}
	}
	if err := a.recordConflict(ctx, addr, mac); err != nil {
		return false, err
	}
	return false, errInUse
}

// otherHolder is the node holding addr's Lease when it is not this one
// ("" when this node holds it, or the Lease cannot be read).
func (a *Agent) otherHolder(ctx context.Context, addr netip.Addr) string {
	l, err := a.o.Client.CoordinationV1().Leases(a.o.Namespace).Get(ctx, lbsvc.AddressLeaseName(addr), metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == a.o.NodeName {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// probeReason says why addr, whose Lease this node holds but which this
// process does not announce yet, must be probed first ("" = it need not:
// a vip node announced it after the last conflict record).
func (a *Agent) probeReason(ctx context.Context, addr netip.Addr) (string, error) {
	l, err := a.agentLease(ctx, lbsvc.AddressLeaseName(addr))
	if err != nil {
		return "", fmt.Errorf("reading the Lease of %s: %w", addr, err)
	}
	if l == nil {
		return "the address has no Lease", nil
	}
	at, perr := time.Parse(time.RFC3339Nano, l.Annotations[AnnotationAnnouncedAt])
	if perr != nil {
		return "no vip node announced the address yet", nil
	}
	c, err := a.agentLease(ctx, lbsvc.ConflictLeaseName(addr))
	switch {
	case err != nil:
		return "", fmt.Errorf("reading the conflict record of %s: %w", addr, err)
	case c == nil:
		return "", nil
	}
	seen := c.CreationTimestamp.Time
	if c.Spec.RenewTime != nil {
		seen = c.Spec.RenewTime.Time
	}
	if !seen.Before(at) {
		return fmt.Sprintf("conflict record (MAC %s, %s) is newer than the last announcement", c.Annotations[lbsvc.AnnotationMAC],
			seen.UTC().Format(time.RFC3339)), nil
	}
	return "", nil
}

// leaseCache is what the elector offers besides Elector: its informer's
// view of the agent namespace's vip Leases (*election.Elector has it).
type leaseCache interface {
	Lease(namespace, leaseName string) (*coordv1.Lease, bool)
}

var _ leaseCache = electorAdapter{}

// agentLease reads a vip Lease of the agent namespace (nil: none): from the
// elector's cache when it has one, so a takeover or hand-off does not wait
// for the API server, else from the API server.
func (a *Agent) agentLease(ctx context.Context, name string) (*coordv1.Lease, error) {
	if c, ok := a.o.Elector.(leaseCache); ok {
		l, _ := c.Lease(a.o.Namespace, name)
		return l, nil
	}
	l, err := a.o.Client.CoordinationV1().Leases(a.o.Namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	return l, err
}

// markAnnounced records on the address's Lease that this node announced
// addr after asking the link, or after it was handed over (a merge patch:
// it only changes the marks, so it needs no precondition).
func (a *Agent) markAnnounced(ctx context.Context, addr netip.Addr) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{
		AnnotationAnnouncedAt: a.o.Clock.Now().UTC().Format(time.RFC3339Nano),
		AnnotationAnnouncedBy: a.o.NodeName,
		// Tells the node that handed the address over that it may withdraw.
		election.AnnotationHandedOffBy: nil,
	}}})
	if err != nil {
		return err
	}
	_, err = a.o.Client.CoordinationV1().Leases(a.o.Namespace).Patch(ctx, lbsvc.AddressLeaseName(addr), types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("marking the Lease of %s announced: %w", addr, err)
	}
	return nil
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
	delete(a.unmarked, addr)
	delete(a.conflicts, addr)
	a.mu.Unlock()
	a.probing.forget(addr)
}
