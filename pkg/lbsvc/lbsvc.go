package lbsvc

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"

	"github.com/vip-lb/vip/pkg/ipam"
)

// Annotation and label keys, identical to kube-vip's so that existing
// Services keep working.
const (
	// AnnotationLoadBalancerIPs requests addresses (comma-separated, dual-stack).
	AnnotationLoadBalancerIPs = "kube-vip.io/loadbalancerIPs"
	// AnnotationIgnore set to "true" makes vip leave the Service alone.
	AnnotationIgnore = "kube-vip.io/ignore"
	// AnnotationServiceInterface names the interface the VIP is bound to.
	AnnotationServiceInterface = "kube-vip.io/serviceInterface"
	// AnnotationForwardUPNP set to "true" asks for gateway port mappings
	// (with enableUPNP on the agent).
	AnnotationForwardUPNP = "kube-vip.io/forwardUPNP"
	// AnnotationUPNPLeaseDuration overrides the mapping lease (a Go
	// duration such as "30m"; "0s" asks for permanent mappings).
	AnnotationUPNPLeaseDuration = "kube-vip.io/upnp-lease-duration"
	// AnnotationAllowWithoutEndpoints set to "true" keeps a Service
	// announced while it has no ready endpoint (kube-vip's opt-out).
	AnnotationAllowWithoutEndpoints = "kube-vip.io/allow-reconcile-without-endpoints"
	// AnnotationLeaseName overrides the per-Service Lease name.
	AnnotationLeaseName = "kube-vip.io/leaseName"
	// DefaultLoadBalancerClass is kube-vip's loadBalancerClass name.
	DefaultLoadBalancerClass = "kube-vip.io/kube-vip-class"
	// LeasePrefix prefixes per-Service Lease names.
	LeasePrefix = "kubevip-"
)

// DHCPAddress is the requested address meaning "obtain it by DHCP".
var dhcpV4 = netip.IPv4Unspecified()

// ErrBadRequest marks an unparsable address request on a Service.
var ErrBadRequest = errors.New("bad address request")

// ClassRule says which loadBalancerClass values a program handles.
type ClassRule struct {
	// Name is the class vip answers to besides "no class" (empty = none).
	Name string
	// Only restricts vip to Services carrying exactly Name.
	Only bool
}

// Matches reports whether a Service with the given class is handled.
// Without Only, unclassed Services are handled (like the stock service
// controller) and so are Services of class Name.
func (r ClassRule) Matches(class *string) bool {
	if class == nil {
		return !r.Only
	}
	return r.Name != "" && *class == r.Name
}

// Wants reports whether vip manages svc at all: a LoadBalancer Service whose
// class matches the rule and that is not opted out.
func Wants(svc *v1.Service, rule ClassRule) bool {
	if svc == nil || svc.Spec.Type != v1.ServiceTypeLoadBalancer {
		return false
	}
	if strings.EqualFold(svc.Annotations[AnnotationIgnore], "true") {
		return false
	}
	return rule.Matches(svc.Spec.LoadBalancerClass)
}

// Key returns the namespace/name key of svc.
func Key(svc *v1.Service) string { return svc.Namespace + "/" + svc.Name }

// Request is what a Service asks for: static addresses, DHCP, or nothing
// (pick from the pools).
type Request struct {
	// Addrs are the statically requested addresses, without 0.0.0.0.
	Addrs []netip.Addr
	// DHCP is true when 0.0.0.0 was requested.
	DHCP bool
}

// Requested parses the address request of svc: the annotation first, then
// the deprecated spec.loadBalancerIP (what `kubectl expose
// --load-balancer-ip` sets).
func Requested(svc *v1.Service) (Request, error) {
	raw, src := svc.Annotations[AnnotationLoadBalancerIPs], "annotation "+AnnotationLoadBalancerIPs
	if strings.TrimSpace(raw) == "" {
		raw, src = svc.Spec.LoadBalancerIP, "spec.loadBalancerIP"
	}
	var req Request
	for _, f := range strings.Split(raw, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil || a.Zone() != "" {
			return Request{}, fmt.Errorf("%s: %q is not an IP address: %w", src, f, ErrBadRequest)
		}
		a = a.Unmap()
		if a == dhcpV4 {
			req.DHCP = true
			continue
		}
		if slices.Contains(req.Addrs, a) {
			continue
		}
		req.Addrs = append(req.Addrs, a)
	}
	if len(req.Addrs) > 2 {
		return Request{}, fmt.Errorf("%s: at most one address per family, got %d: %w", src, len(req.Addrs), ErrBadRequest)
	}
	if len(req.Addrs) == 2 && req.Addrs[0].Is4() == req.Addrs[1].Is4() {
		return Request{}, fmt.Errorf("%s: two addresses of the same family: %w", src, ErrBadRequest)
	}
	return req, nil
}

// IngressIPs returns the addresses in status.loadBalancer.ingress.
func IngressIPs(svc *v1.Service) []netip.Addr {
	var out []netip.Addr
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		if a, err := netip.ParseAddr(ing.IP); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// LeaseName is the per-Service Lease name: kubevip-<service>, or the
// kube-vip.io/leaseName annotation when set.
func LeaseName(svc *v1.Service) string {
	if n := strings.TrimSpace(svc.Annotations[AnnotationLeaseName]); n != "" {
		return n
	}
	return LeasePrefix + svc.Name
}

// Families returns the families svc wants addresses for, in order, and
// whether the list is a requirement (RequireDualStack) or a preference.
// Without spec.ipFamilies (older clients, headless defaults) it is IPv4.
func Families(svc *v1.Service) (fams []ipam.Family, required bool) {
	for _, f := range svc.Spec.IPFamilies {
		switch f {
		case v1.IPv4Protocol:
			fams = append(fams, ipam.IPv4)
		case v1.IPv6Protocol:
			fams = append(fams, ipam.IPv6)
		}
	}
	if len(fams) == 0 {
		fams = []ipam.Family{ipam.IPv4}
	}
	policy := v1.IPFamilyPolicySingleStack
	if svc.Spec.IPFamilyPolicy != nil {
		policy = *svc.Spec.IPFamilyPolicy
	}
	switch policy {
	case v1.IPFamilyPolicySingleStack:
		return fams[:1], true
	case v1.IPFamilyPolicyRequireDualStack:
		return fams, true
	default:
		return fams, len(fams) == 1
	}
}

// Ports returns the Service's (protocol, port) pairs, which decide whether
// two Services may share an address.
func Ports(svc *v1.Service) []ipam.Port {
	out := make([]ipam.Port, 0, len(svc.Spec.Ports))
	for _, p := range svc.Spec.Ports {
		proto := string(p.Protocol)
		if proto == "" {
			proto = string(v1.ProtocolTCP)
		}
		out = append(out, ipam.Port{Proto: proto, Port: uint16(p.Port)})
	}
	return out
}

// Interface returns the interface requested by annotation, or "".
func Interface(svc *v1.Service) string {
	return strings.TrimSpace(svc.Annotations[AnnotationServiceInterface])
}
