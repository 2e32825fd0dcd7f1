package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"

	"github.com/vip-lb/vip/pkg/announce"
	"github.com/vip-lb/vip/pkg/lbsvc"
)

// DefaultWorkers is the number of parallel reconcilers when Options give
// none; vip-agent's --workers defaults to it too (pkg/agentconfig).
const DefaultWorkers = 8

// Mode is how the agent advertises Service addresses.
type Mode string

// The advertisement modes.
const (
	// ModeARP announces each address from one elected node (gratuitous ARP /
	// unsolicited neighbour advertisements).
	ModeARP Mode = "arp"
	// ModeBGP announces each address from every eligible node.
	ModeBGP Mode = "bgp"
)

// ErrInvalidOptions marks a configuration the agent refuses to start with.
var ErrInvalidOptions = errors.New("invalid agent options")

// Elector is what the agent needs from the per-Service election (layer 2
// mode only).
type Elector interface {
	AliveNodes() []string
	Alive(node string) bool
	Fenced() bool
	Ensure(ctx context.Context, namespace, leaseName, serviceKey string, candidates []string) (Decision, error)
	Release(ctx context.Context, namespace, leaseName, successor string) error
	Delete(ctx context.Context, namespace, leaseName string) error
	Holder(namespace, leaseName string) (string, bool)
}

// Decision is the elector's answer for one Service.
type Decision struct {
	// Announce is true when this node must announce the Service now.
	Announce bool
	// Holder is the node holding the Service's Lease ("" = nobody).
	Holder string
	// Changed is true when this call changed ownership; Reason says why.
	Changed bool
	Reason  string
	// HandOffTo, when set, asks the caller to withdraw the addresses and
	// then Release the Lease to that node (never two announcers at once).
	HandOffTo string
	// RequeueAfter, when positive, asks for another look after it.
	RequeueAfter time.Duration
	// Fresh: this call acquired an address no vip node held before.
	Fresh bool
}

// Prober asks the link whether another host answers for an address (nil
// MAC: nobody did). *probe.Prober implements it.
type Prober interface {
	Probe(ctx context.Context, vip netip.Addr, iface string) (net.HardwareAddr, error)
}

// Options configure the agent.
type Options struct {
	Client    kubernetes.Interface
	NodeName  string
	Mode      Mode
	Class     lbsvc.ClassRule
	Announcer announce.Announcer
	// Elector decides ownership in ModeARP; unused in ModeBGP.
	Elector Elector
	// Source obtains the addresses of Services that do not take one from a
	// pool (plugins.go; DHCP for 0.0.0.0: pkg/agent/dhcpsource). ModeARP
	// only; nil leaves such Services pending.
	Source AddressSource
	// Interface is the default announcing interface ("" = the interface
	// whose subnet covers the address). ServicesInterface overrides it for
	// Services (kube-vip's vip_servicesinterface).
	Interface, ServicesInterface string
	// Namespace is the agent's namespace, which holds every vip Lease
	// (default kube-system).
	Namespace string
	// AllowedInterfaces are further interfaces a Service may name with
	// kube-vip.io/serviceInterface (besides Interface, ServicesInterface and
	// the pools ConfigMap's interface-* values); any other is refused.
	AllowedInterfaces []string
	// ConfigMapName/Namespace locate the pools ConfigMap, read for its
	// interface-<namespace> keys.
	ConfigMapName, ConfigMapNamespace string
	// ServicesNamespace, when set, limits the Services served to that
	// namespace (kube-vip's svc_namespace); "" = every namespace.
	ServicesNamespace string
	// Workers is the number of parallel reconcilers (default
	// DefaultWorkers).
	Workers int
	// ResyncPeriod re-checks every Service periodically (0 = never).
	ResyncPeriod time.Duration
	Recorder     record.EventRecorder
	Logger       logr.Logger
	Registerer   prometheus.Registerer

	// Prober, when set, probes an address before its first announcement in
	// layer 2 mode (not on takeover from another vip node).
	Prober Prober
	// NodeWithMAC names the vip node whose interface has mac ("" = none,
	// nil = unknown): a probe answered by a vip node (an address left bound
	// by a killed agent) is no conflict with a foreign host.
	NodeWithMAC func(mac net.HardwareAddr) string
	// Forwarder, when set, is told which Services this node serves on
	// which addresses (plugins.go; UPnP port mappings:
	// pkg/agent/upnpforward). ModeARP only.
	Forwarder Forwarder
	// HandOffGrace bounds how long an address handed to a successor stays
	// bound here when the successor does not say it announced it
	// (handoff.go; default DefaultHandOffGrace).
	HandOffGrace time.Duration
	// Clock times reconciles, probes, conflict records and the
	// NoAddressAssigned wait, and drives the queue's delayed retries
	// (default: the real clock; tests pass a fake).
	Clock clock.WithTickerAndDelayedExecution
}

// Validate checks the options.
func (o *Options) Validate() error {
	switch {
	case o.Client == nil:
		return fmt.Errorf("%w: no Kubernetes client", ErrInvalidOptions)
	case o.NodeName == "":
		return fmt.Errorf("%w: node name is empty (set --node-name, NODE_NAME or vip_nodename)", ErrInvalidOptions)
	case o.Announcer == nil:
		return fmt.Errorf("%w: no announcer", ErrInvalidOptions)
	case o.Mode != ModeARP && o.Mode != ModeBGP:
		return fmt.Errorf("%w: mode %q is neither arp nor bgp", ErrInvalidOptions, o.Mode)
	case o.Mode == ModeARP && o.Elector == nil:
		return fmt.Errorf("%w: layer 2 mode needs an elector", ErrInvalidOptions)
	case o.Mode != ModeARP && (o.Source != nil || o.Forwarder != nil):
		return fmt.Errorf("%w: address sources (DHCP) and forwarders (UPnP) work in layer 2 mode only", ErrInvalidOptions)
	case o.Class.Only && o.Class.Name == "":
		return fmt.Errorf("%w: lb_class_only needs lb_class_name", ErrInvalidOptions)
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.HandOffGrace <= 0 {
		o.HandOffGrace = DefaultHandOffGrace
	}
	if o.Namespace == "" {
		o.Namespace = "kube-system"
	}
	if o.ConfigMapName == "" {
		o.ConfigMapName = "kubevip"
	}
	if o.ConfigMapNamespace == "" {
		o.ConfigMapNamespace = "kube-system"
	}
	return nil
}
