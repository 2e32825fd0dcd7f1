package agent

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	v1 "k8s.io/api/core/v1"

	"github.com/vip-lb/vip/pkg/ipam"
	"github.com/vip-lb/vip/pkg/lbsvc"
)

// Admin consent read from the pools ConfigMap: what a namespace's Services
// may ask of the agent through annotations. Tenants may write annotations,
// never this ConfigMap.
const (
	// KeyPrefixAllowUPnP starts keys holding a bool: whether Services of
	// that namespace (allow-upnp-<namespace>, or allow-upnp-global for all)
	// may have gateway ports forwarded with kube-vip.io/forwardUPNP. Unset
	// means no.
	KeyPrefixAllowUPnP = "allow-upnp-"

	// ReasonInterfaceNotAllowed: kube-vip.io/serviceInterface names an
	// interface no administrator allowed; the admin's interface is used.
	ReasonInterfaceNotAllowed = "InterfaceNotAllowed"
	// ReasonUPnPNotAllowed: the Service asks for UPnP forwarding, which its
	// namespace is not allowed; nothing is forwarded.
	ReasonUPnPNotAllowed = "UPnPNotAllowed"
)

// consent is what the pools ConfigMap allows namespaces to ask for.
type consent struct {
	// upnp is allow-upnp-<scope> by scope (a namespace or "global").
	upnp map[string]bool
	// ifaces are the interfaces named by interface-<scope> keys: an
	// administrator chose them, so a Service may name them too.
	ifaces map[string]bool
}

// parseConsent reads the consent keys of the pools ConfigMap's data. A
// value that is not a bool counts as false (the safe reading).
func parseConsent(data map[string]string) consent {
	c := consent{upnp: map[string]bool{}, ifaces: map[string]bool{}}
	for k, v := range data {
		switch {
		case strings.HasPrefix(k, KeyPrefixAllowUPnP):
			b, _ := strconv.ParseBool(strings.TrimSpace(v))
			c.upnp[strings.TrimPrefix(k, KeyPrefixAllowUPnP)] = b
		case strings.HasPrefix(k, ipam.KeyPrefixInterface):
			if name := strings.TrimSpace(v); name != "" {
				c.ifaces[name] = true
			}
		}
	}
	return c
}

// upnpAllowed reports whether Services of ns may ask for UPnP forwarding:
// allow-upnp-<ns> if set, else allow-upnp-global, else false.
func (c consent) upnpAllowed(ns string) bool {
	if b, ok := c.upnp[ns]; ok {
		return b
	}
	return c.upnp[ipam.GlobalScope]
}

func (a *Agent) setConsent(data map[string]string) {
	c := parseConsent(data)
	a.mu.Lock()
	a.consent = c
	a.mu.Unlock()
}

// interfaceAllowed reports whether a Service may name iface: it is the
// agent's own interface, listed in Options.AllowedInterfaces, or named by
// an interface-* key of the pools ConfigMap.
func (a *Agent) interfaceAllowed(iface string) bool {
	if iface == a.o.Interface || iface == a.o.ServicesInterface || slices.Contains(a.o.AllowedInterfaces, iface) {
		return true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.consent.ifaces[iface]
}

// adminInterface is the interface the administrator chose for svc: the
// pools ConfigMap's interface-<ns>/interface-global, the services
// interface, the default interface, or "" (the interface whose subnet covers
// the address).
func (a *Agent) adminInterface(svc *v1.Service) string {
	a.mu.Lock()
	cfg := a.ifaces
	a.mu.Unlock()
	if cfg != nil {
		if i := cfg.Interface(svc.Namespace); i != "" {
			return i
		}
	}
	if a.o.ServicesInterface != "" {
		return a.o.ServicesInterface
	}
	return a.o.Interface
}

// interfaceFor picks the announcing interface: the Service's
// kube-vip.io/serviceInterface when an administrator allowed that interface
// (else a one-time InterfaceNotAllowed Warning), otherwise the admin's.
func (a *Agent) interfaceFor(svc *v1.Service) string {
	admin := a.adminInterface(svc)
	req := lbsvc.Interface(svc)
	key := svc.Namespace + "/" + svc.Name
	if req == "" {
		a.warnOnce(key, "iface", "", nil)
		return admin
	}
	if req == admin || a.interfaceAllowed(req) {
		a.warnOnce(key, "iface", "", nil)
		return req
	}
	a.warnOnce(key, "iface", req, func() {
		where := admin
		if where == "" {
			where = "the interface whose subnet covers the address"
		}
		a.rec.Eventf(svc, v1.EventTypeWarning, ReasonInterfaceNotAllowed,
			"%s %q is not an interface an administrator allowed (interface-* keys of the pools ConfigMap, or the agent's --allowed-interfaces); announcing on %s instead",
			lbsvc.AnnotationServiceInterface, req, where)
		a.log.Info("Service asks for an interface that is not allowed", "service", key, "interface", req, "using", where)
	})
	return admin
}

// warnOnce runs report when what key last reported under kind differs from
// value; an empty value forgets it (the problem went away).
func (a *Agent) warnOnce(key, kind, value string, report func()) {
	k := kind + "\x00" + key
	a.mu.Lock()
	if a.warned == nil {
		a.warned = map[string]string{}
	}
	prev, had := a.warned[k]
	if value == "" {
		delete(a.warned, k)
	} else {
		a.warned[k] = value
	}
	a.mu.Unlock()
	if value != "" && (!had || prev != value) && report != nil {
		report()
	}
}

// upnpRefused reports whether svc asks for UPnP forwarding its namespace
// may not have, and warns once if so.
func (a *Agent) upnpRefused(key string, svc *v1.Service, asks bool) bool {
	a.mu.Lock()
	ok := a.consent.upnpAllowed(svc.Namespace)
	a.mu.Unlock()
	if !asks || ok || a.o.PortMap.AllServices {
		a.warnOnce(key, "upnp", "", nil)
		return false
	}
	a.warnOnce(key, "upnp", "refused", func() {
		a.rec.Event(svc, v1.EventTypeWarning, ReasonUPnPNotAllowed, fmt.Sprintf(
			"UPnP port forwarding is not allowed for namespace %s: an administrator must set %s%s (or %sglobal) to \"true\" in the pools ConfigMap; nothing is forwarded",
			svc.Namespace, KeyPrefixAllowUPnP, svc.Namespace, KeyPrefixAllowUPnP))
		a.log.Info("Service asks for UPnP forwarding its namespace is not allowed", "service", key)
	})
	return true
}
