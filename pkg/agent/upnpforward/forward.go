// Package upnpforward is the agent's UPnP plug-in: an agent.Forwarder that
// keeps port mappings on the network's Internet gateway (through a
// upnp.Mapper) for the Services this node announces in layer 2 mode. It
// decides what a Service forwards: the Service asks with
// kube-vip.io/forwardUPNP: "true" (or the administrator forwards every
// Service with --upnp-all-services), its namespace must be allowed by
// allow-upnp-<namespace> or allow-upnp-global in the pools ConfigMap (a
// namespace user writes annotations, never that ConfigMap), and only TCP and
// UDP ports of IPv4 addresses are mapped, for kube-vip.io/upnpLeaseDuration
// or the agent's lease. What cannot be honoured is a Warning Event on the
// Service, once per change; the mapper's outcomes become Events too.
//
// internal/agentapp builds it only when enableUPNP is set.
package upnpforward

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/vip-lb/vip/pkg/agent"
	"github.com/vip-lb/vip/pkg/ipam"
	"github.com/vip-lb/vip/pkg/lbsvc"
	"github.com/vip-lb/vip/pkg/upnp"
)

// Admin consent and Events (the annotations, lbsvc.AnnotationForwardUPNP
// and lbsvc.AnnotationUPNPLeaseDuration, are kube-vip's).
const (
	// KeyPrefixAllowUPnP starts pools ConfigMap keys holding a bool:
	// whether Services of that namespace (allow-upnp-<namespace>, or
	// allow-upnp-global for all) may have gateway ports forwarded with
	// kube-vip.io/forwardUPNP. Unset means no.
	KeyPrefixAllowUPnP = "allow-upnp-"

	// ReasonUPnPNotAllowed: the Service asks for UPnP forwarding, which its
	// namespace is not allowed; nothing is forwarded.
	ReasonUPnPNotAllowed = "UPnPNotAllowed"
	// ReasonUPnPSettings is the Warning reason for settings vip cannot
	// honour (bad lease annotation, SCTP ports, IPv6 addresses).
	ReasonUPnPSettings = "UPnPSettings"
)

// unserveWait bounds how long Unserve waits for the gateway to be told.
const unserveWait = 3 * time.Second

// Mapper forwards gateway ports to addresses, per owner (*upnp.Mapper
// implements it).
type Mapper interface {
	// Set replaces what owner forwards; an empty Want removes it.
	Set(owner string, w upnp.Want)
	// Flush waits until what was Set for owner reached the gateway (or
	// failed), so a withdrawn Service's mappings are deleted before the
	// next owner adds its own.
	Flush(ctx context.Context, owner string)
}

var (
	_ Mapper          = (*upnp.Mapper)(nil)
	_ agent.Forwarder = (*Forwarder)(nil)
	_ upnp.Reporter   = (*Forwarder)(nil)
)

// Options configure a Forwarder.
type Options struct {
	Mapper Mapper
	// AllServices maps every announced Service, not only the ones with
	// kube-vip.io/forwardUPNP: "true" (no namespace consent needed: the
	// administrator chose it).
	AllServices bool
	// Lease is the mapping lease unless the Service sets one (0 asks for
	// permanent mappings; vip-agent's default is kube-vip's 1 h).
	Lease time.Duration
	// Service returns the Service of a key from the agent's cache (nil when
	// gone): the mapper's outcomes are Events on it.
	Service  func(key string) *v1.Service
	Recorder record.EventRecorder
	Logger   logr.Logger
}

// Forwarder is the UPnP agent.Forwarder.
type Forwarder struct {
	o Options

	mu       sync.Mutex
	allowed  map[string]bool   // allow-upnp-<scope> by scope (a namespace or "global")
	refused  map[string]bool   // Service keys warned of UPnPNotAllowed
	problems map[string]string // Service key -> last settings warning
}

// New returns a Forwarder over o.Mapper.
func New(o Options) *Forwarder {
	if o.Recorder == nil {
		o.Recorder = &record.FakeRecorder{}
	}
	if o.Service == nil {
		o.Service = func(string) *v1.Service { return nil }
	}
	return &Forwarder{o: o, allowed: map[string]bool{}, refused: map[string]bool{}, problems: map[string]string{}}
}

// SetPools reads the allow-upnp-* keys of the pools ConfigMap. A value that
// is not a bool counts as false (the safe reading).
func (f *Forwarder) SetPools(data map[string]string) {
	allowed := map[string]bool{}
	for k, v := range data {
		if scope, ok := strings.CutPrefix(k, KeyPrefixAllowUPnP); ok {
			b, _ := strconv.ParseBool(strings.TrimSpace(v))
			allowed[scope] = b
		}
	}
	f.mu.Lock()
	f.allowed = allowed
	f.mu.Unlock()
}

// allowedNS reports whether Services of ns may ask for UPnP forwarding:
// allow-upnp-<ns> if set, else allow-upnp-global, else false.
func (f *Forwarder) allowedNS(ns string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if b, ok := f.allowed[ns]; ok {
		return b
	}
	return f.allowed[ipam.GlobalScope]
}

// Serve maps svc's TCP and UDP ports on the IPv4 addresses in addrs.
func (f *Forwarder) Serve(key string, svc *v1.Service, addrs []netip.Addr) {
	asks := f.o.AllServices || strings.EqualFold(strings.TrimSpace(svc.Annotations[lbsvc.AnnotationForwardUPNP]), "true")
	if f.refuse(key, svc, asks) {
		f.o.Mapper.Set(key, upnp.Want{})
		return
	}
	w, problems := wantPorts(svc, addrs, f.o)
	f.o.Mapper.Set(key, w)
	msg := strings.Join(problems, "; ")
	f.mu.Lock()
	changed := f.problems[key] != msg
	if msg == "" {
		delete(f.problems, key)
	} else {
		f.problems[key] = msg
	}
	f.mu.Unlock()
	if changed && msg != "" {
		f.o.Recorder.Event(svc, v1.EventTypeWarning, ReasonUPnPSettings, msg)
		f.o.Logger.Info("UPnP settings not honoured", "service", key, "err", msg)
	}
}

// Unserve removes key's mappings and waits, a few seconds at most, until
// the gateway has been told.
func (f *Forwarder) Unserve(ctx context.Context, key string) {
	f.o.Mapper.Set(key, upnp.Want{})
	fctx, cancel := context.WithTimeout(ctx, unserveWait)
	f.o.Mapper.Flush(fctx, key)
	cancel()
	f.mu.Lock()
	delete(f.problems, key)
	f.mu.Unlock()
}

// refuse reports whether svc asks for UPnP forwarding its namespace may not
// have, and warns once per refusal if so.
func (f *Forwarder) refuse(key string, svc *v1.Service, asks bool) bool {
	if !asks || f.o.AllServices || f.allowedNS(svc.Namespace) {
		f.mu.Lock()
		delete(f.refused, key)
		f.mu.Unlock()
		return false
	}
	f.mu.Lock()
	warned := f.refused[key]
	f.refused[key] = true
	f.mu.Unlock()
	if !warned {
		f.o.Recorder.Event(svc, v1.EventTypeWarning, ReasonUPnPNotAllowed, fmt.Sprintf(
			"UPnP port forwarding is not allowed for namespace %s: an administrator must set %s%s (or %sglobal) to \"true\" in the pools ConfigMap; nothing is forwarded",
			svc.Namespace, KeyPrefixAllowUPnP, svc.Namespace, KeyPrefixAllowUPnP))
		f.o.Logger.Info("Service asks for UPnP forwarding its namespace is not allowed", "service", key)
	}
	return true
}

// Report records an Event from the mapper on the Service of owner (dropped
// when the Service is gone).
func (f *Forwarder) Report(owner string, warning bool, reason, message string) {
	svc := f.o.Service(owner)
	if svc == nil {
		f.o.Logger.V(1).Info("port mapping event for a Service that is gone", "service", owner, "reason", reason, "message", message)
		return
	}
	t := v1.EventTypeNormal
	if warning {
		t = v1.EventTypeWarning
	}
	f.o.Recorder.Event(svc, t, reason, message)
	f.o.Logger.Info("port mapping", "service", owner, "reason", reason, "message", message)
}

// wantPorts is what svc forwards when this node holds vips, and what of its
// settings cannot be honoured.
func wantPorts(svc *v1.Service, vips []netip.Addr, o Options) (upnp.Want, []string) {
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
	vips = slices.Clone(vips)
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
