package lbsvc

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"

	"github.com/vip-lb/vip/pkg/ipam"
)

// Keys of the DHCP record the owning vip-agent writes on a Service's Lease
// (kubevip-<service>). vip-ccm reads them and returns the address as the
// Service's status, so only vip-ccm ever writes status.
const (
	// LabelDHCP marks Service Leases that carry a DHCP record; vip-ccm
	// watches only those.
	LabelDHCP = "vip.io/dhcp"
	// AnnotationDHCPAddress is the IPv4 address leased for the Service.
	AnnotationDHCPAddress = "vip.io/dhcp-address"
	// AnnotationDHCPMAC is the hardware address the lease was taken with.
	AnnotationDHCPMAC = "vip.io/dhcp-mac"
	// AnnotationDHCPExpiry is when the lease ends unless renewed (RFC 3339).
	AnnotationDHCPExpiry = "vip.io/dhcp-expiry"
)

// ErrBadDHCPRecord marks a DHCP record that cannot be trusted.
var ErrBadDHCPRecord = errors.New("bad DHCP record")

// DHCPRecord is what the owner of a DHCP Service publishes about its lease.
type DHCPRecord struct {
	Addr   netip.Addr
	MAC    net.HardwareAddr
	Expiry time.Time
}

// Annotations returns the record as Lease annotations.
func (r DHCPRecord) Annotations() map[string]string {
	return map[string]string{
		AnnotationDHCPAddress: r.Addr.String(),
		AnnotationDHCPMAC:     r.MAC.String(),
		AnnotationDHCPExpiry:  r.Expiry.UTC().Format(time.RFC3339),
	}
}

// ParseDHCPRecord reads a record from Lease annotations. ok is false when no
// record is present; err says why a present record is unusable. Only
// unicast IPv4 addresses that could be a VIP pass; the caller still checks
// node addresses and conflicts.
func ParseDHCPRecord(ann map[string]string) (rec DHCPRecord, ok bool, err error) {
	raw, present := ann[AnnotationDHCPAddress]
	if !present {
		return DHCPRecord{}, false, nil
	}
	a, err := netip.ParseAddr(strings.TrimSpace(raw))
	if err != nil {
		return DHCPRecord{}, true, fmt.Errorf("%s %q: %w", AnnotationDHCPAddress, raw, ErrBadDHCPRecord)
	}
	switch {
	case !a.Is4():
		return DHCPRecord{}, true, fmt.Errorf("%s %q: not an IPv4 address: %w", AnnotationDHCPAddress, raw, ErrBadDHCPRecord)
	case a.IsUnspecified(), a.IsLoopback(), a.IsMulticast(), a.IsLinkLocalUnicast(), a == netip.IPv4Unspecified(),
		a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return DHCPRecord{}, true, fmt.Errorf("%s %s: not a usable unicast address: %w", AnnotationDHCPAddress, a, ErrBadDHCPRecord)
	}
	rec.Addr = a
	if m := strings.TrimSpace(ann[AnnotationDHCPMAC]); m != "" {
		hw, err := net.ParseMAC(m)
		if err != nil || len(hw) != 6 {
			return DHCPRecord{}, true, fmt.Errorf("%s %q: %w", AnnotationDHCPMAC, m, ErrBadDHCPRecord)
		}
		rec.MAC = hw
	}
	if e := strings.TrimSpace(ann[AnnotationDHCPExpiry]); e != "" {
		t, err := time.Parse(time.RFC3339, e)
		if err != nil {
			return DHCPRecord{}, true, fmt.Errorf("%s %q: %w", AnnotationDHCPExpiry, e, ErrBadDHCPRecord)
		}
		rec.Expiry = t
	}
	return rec, true, nil
}

// WantsDHCP reports whether svc asks for its IPv4 address by DHCP
// (0.0.0.0 in the annotation or spec.loadBalancerIP).
func WantsDHCP(svc *v1.Service) bool {
	req, err := Requested(svc)
	return err == nil && req.DHCP
}

// UsesDHCP reports whether svc's IPv4 address comes from DHCP: it requests
// 0.0.0.0 and its namespace may (ipam.Config.DHCPAllowed), or it requests nothing, wants IPv4 and the first pool serving its
// namespace is the 0.0.0.0/32 marker (pools may be nil), unless its status
// already holds an IPv4 address from a pool (given before the pools were
// edited: a pool edit never moves a Service).
func UsesDHCP(svc *v1.Service, pools *ipam.Config) bool {
	req, err := Requested(svc)
	switch {
	case err != nil:
		return false
	case req.DHCP:
		return pools.DHCPAllowed(svc.Namespace)
	case len(req.Addrs) > 0 || !pools.DHCP(svc.Namespace):
		return false
	}
	fams, _ := Families(svc)
	if !slices.Contains(fams, ipam.IPv4) {
		return false
	}
	for _, a := range IngressIPs(svc) {
		if a.Is4() && pools.InAnyPool(a) {
			return false
		}
	}
	return true
}
