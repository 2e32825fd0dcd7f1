package agent

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/vip-lb/vip/pkg/lbsvc"
	"github.com/vip-lb/vip/pkg/upnp"
)

// UPnP Events (the annotations, lbsvc.AnnotationForwardUPNP and
// lbsvc.AnnotationUPNPLeaseDuration, are kube-vip's).
const (
	// ReasonUPnPSettings is the Warning reason for settings vip cannot
	// honour (bad lease annotation, SCTP ports, IPv6 addresses).
	ReasonUPnPSettings = "UPnPSettings"
)

// PortMapper forwards gateway ports to the addresses this node announces
// (upnp.Mapper implements it).
type PortMapper interface {
	// Set replaces what owner forwards; an empty Want removes it.
	Set(owner string, w upnp.Want)
	// Flush waits until what was Set for owner reached the gateway (or
	// failed), so a withdrawn Service's mappings are deleted before the
	// next owner adds its own.
	Flush(ctx context.Context, owner string)
}

// PortMapOptions configure gateway port mappings. Only the node that
// announces a Service in layer 2 mode maps its ports.
type PortMapOptions struct {
	// Mapper is nil when UPnP is off.
	Mapper PortMapper
	// AllServices maps every announced Service, not only the ones with
	// kube-vip.io/forwardUPNP: "true".
	AllServices bool
	// Lease is the mapping lease unless the Service sets one (0 asks for
	// permanent mappings; vip-agent's default is kube-vip's 1 h).
	Lease time.Duration
}

// portMapState remembers the last settings warning per Service, so it is
// reported once.
type portMapState struct {
	mu       sync.Mutex
	problems map[string]string
}

// mapPorts tells the port mapper what svc forwards through this node: its
// TCP and UDP ports on the IPv4 addresses this node holds for key.
func (a *Agent) mapPorts(key string, svc *v1.Service) {
	pm := a.o.PortMap
	if pm.Mapper == nil || a.o.Mode != ModeARP {
		return
	}
	asks := pm.AllServices || strings.EqualFold(strings.TrimSpace(svc.Annotations[lbsvc.AnnotationForwardUPNP]), "true")
	if a.upnpRefused(key, svc, asks) {
		pm.Mapper.Set(key, upnp.Want{})
		return
	}
	w, problems := wantPorts(svc, a.servedAddrs(key), pm)
	pm.Mapper.Set(key, w)
	msg := strings.Join(problems, "; ")
	a.ports.mu.Lock()
	if a.ports.problems == nil {
		a.ports.problems = map[string]string{}
	}
	changed := a.ports.problems[key] != msg
	if msg == "" {
		delete(a.ports.problems, key)
	} else {
		a.ports.problems[key] = msg
	}
	a.ports.mu.Unlock()
	if changed && msg != "" {
		a.rec.Event(svc, v1.EventTypeWarning, ReasonUPnPSettings, msg)
		a.log.Info("UPnP settings not honoured", "service", key, "err", msg)
	}
}

// unmapPorts removes key's mappings (this node stopped announcing it) and
// waits, a few seconds at most, until the gateway has been told.
func (a *Agent) unmapPorts(ctx context.Context, key string) {
	if a.o.PortMap.Mapper == nil {
		return
	}
	a.o.PortMap.Mapper.Set(key, upnp.Want{})
	fctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	a.o.PortMap.Mapper.Flush(fctx, key)
	cancel()
	a.ports.mu.Lock()
	delete(a.ports.problems, key)
	a.ports.mu.Unlock()
}

// wantPorts is what svc forwards when this node holds vips, and what of its
// settings cannot be honoured.
func wantPorts(svc *v1.Service, vips []netip.Addr, o PortMapOptions) (upnp.Want, []string) {
	if !o.AllServices && !strings.EqualFold(strings.TrimSpace(svc.Annotations[lbsvc.AnnotationForwardUPNP]), "true") {
		return upnp.Want{}, nil
	}
	var problems []string
	w := upnp.Want{Lease: max(o.Lease, 0)}
	if raw, ok := svc.Annotations[lbsvc.AnnotationUPNPLeaseDuration]; ok {
		d, err := time.ParseDuration(strings.TrimSpace(raw))
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("annotation %s=%q is not a duration (e.g. 30m); using %v", lbsvc.AnnotationUPNPLeaseDuration, raw, w.Lease))
		case d < 0:
			problems = append(problems, fmt.Sprintf("annotation %s=%q is negative; using %v", lbsvc.AnnotationUPNPLeaseDuration, raw, w.Lease))
		default:
			w.Lease = d
		}
	}
	slices.SortFunc(vips, netip.Addr.Compare)
	var v4 []netip.Addr
	for _, v := range vips {
		if v.Is4() {
			v4 = append(v4, v)
		} else {
			problems = append(problems, fmt.Sprintf("%s not forwarded: UPnP port mappings are IPv4 only", v))
		}
	}
	for _, p := range svc.Spec.Ports {
		proto := strings.ToUpper(string(p.Protocol))
		if proto == "" {
			proto = upnp.TCP
		}
		if proto != upnp.TCP && proto != upnp.UDP {
			problems = append(problems, fmt.Sprintf("port %d/%s not forwarded: UPnP maps only TCP and UDP", p.Port, p.Protocol))
			continue
		}
		if p.Port <= 0 || p.Port > 65535 {
			continue
		}
		for _, v := range v4 {
			w.Mappings = append(w.Mappings, upnp.Mapping{ID: upnp.ID{Protocol: proto, Port: uint16(p.Port)}, VIP: v})
		}
	}
	return w, problems
}

// PortMapEvent records an Event from the port mapper on the Service key
// (dropped when the Service is gone).
func (a *Agent) PortMapEvent(key string, warning bool, reason, message string) {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return
	}
	svc, err := a.svcs.Services(ns).Get(name)
	if err != nil {
		a.log.V(1).Info("port mapping event for a Service that is gone", "service", key, "reason", reason, "message", message)
		return
	}
	t := v1.EventTypeNormal
	if warning {
		t = v1.EventTypeWarning
	}
	a.rec.Event(svc, t, reason, message)
	a.log.Info("port mapping", "service", key, "reason", reason, "message", message)
}
