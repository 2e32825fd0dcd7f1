package agent

import (
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"

	"github.com/vip-lb/vip/pkg/ipam"
	"github.com/vip-lb/vip/pkg/lbsvc"
)

// Admin consent read from the pools ConfigMap: what a namespace's Services
// may ask of the agent through annotations. Tenants may write annotations,
// never this ConfigMap. (Consent for UPnP forwarding, allow-upnp-*, is read
// by the UPnP plug-in, pkg/agent/upnpforward.)
const (
	// ReasonInterfaceNotAllowed: kube-vip.io/serviceInterface names an
	// interface no administrator allowed; the admin's interface is used.
	ReasonInterfaceNotAllowed = "InterfaceNotAllowed"
)

// consent is what the pools ConfigMap allows namespaces to ask for.
type consent struct {
	// ifaces are the interfaces named by interface-<scope> keys: an
	// administrator chose them, so a Service may name them too.
	ifaces map[string]bool
}

// parseConsent reads the consent keys of the pools ConfigMap's data.
func parseConsent(data map[string]string) consent {
	c := consent{ifaces: map[string]bool{}}
	for k, v := range data {
		if strings.HasPrefix(k, ipam.KeyPrefixInterface) {
			if name := strings.TrimSpace(v); name != "" {
				c.ifaces[name] = true
			}
		}
	}
	return c
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
