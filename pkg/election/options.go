package election

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"

	"github.com/vip-lb/vip/pkg/lbsvc"
)

// Labels and annotations written on the Leases this package manages; the
// values are the contract in package lbsvc, which vip-ccm reads.
const (
	// LabelManagedBy marks every Lease written by vip-agent; the informer
	// selects on it.
	LabelManagedBy = lbsvc.LabelLeaseManagedBy
	// ManagedByValue is the value of LabelManagedBy.
	ManagedByValue = lbsvc.LeaseManagedByAgent
	// LabelRole says whether a Lease is a node heartbeat or a Service Lease.
	LabelRole = lbsvc.LabelLeaseRole
	// RoleHeartbeat is the LabelRole value of node heartbeat Leases.
	RoleHeartbeat = lbsvc.LeaseRoleHeartbeat
	// RoleService is the LabelRole value of per-Service Leases (DHCP
	// Services, whose address is not known before the election).
	RoleService = lbsvc.LeaseRoleService
	// RoleAddress is the LabelRole value of per-address Leases
	// (vip-addr-<addr>): the holder announces every Service on the address.
	RoleAddress = lbsvc.LeaseRoleAddress
	// LabelService names the Service a Service Lease belongs to.
	LabelService = lbsvc.LabelLeaseService
	// AnnotationService names the Service (namespace/name) of a
	// per-Service Lease.
	AnnotationService = lbsvc.AnnotationLeaseService
	// AnnotationReason records why a Service Lease last changed hands.
	AnnotationReason = "vip.io/reason"
	// AnnotationHandedOffBy names the node that handed a Service Lease to
	// its holder; the holder removes it once it announces the address, and
	// the node that handed it off keeps the address bound until then (make
	// before break). Any other change of holder removes it too.
	AnnotationHandedOffBy = "vip.io/handed-off-by"
	// AnnotationHealth carries the agent's health URL on its heartbeat Lease.
	AnnotationHealth = "vip.io/health"
	// HeartbeatPrefix prefixes heartbeat Lease names: vip-node-<node>.
	HeartbeatPrefix = lbsvc.HeartbeatLeasePrefix
)

// Defaults for zero Options fields.
const (
	DefaultNamespace        = "kube-system"
	DefaultHeartbeatPeriod  = 200 * time.Millisecond
	DefaultHeartbeatTimeout = 800 * time.Millisecond
	DefaultSettleTime       = 10 * time.Second
	// checkInterval is how often staleness and fencing are evaluated.
	checkInterval = 50 * time.Millisecond
)

// Sentinel errors, checked with errors.Is.
var (
	// ErrInvalidOptions marks Options that New refuses.
	ErrInvalidOptions = errors.New("invalid election options")
	// ErrShuttingDown is returned by calls made after Shutdown.
	ErrShuttingDown = errors.New("elector is shutting down")
	// ErrNotSynced is returned by Ensure before WaitForSync succeeds: until
	// every existing heartbeat has been seen, live holders would look dead.
	ErrNotSynced = errors.New("lease cache not synced yet")
	// ErrAlreadyRunning is returned by a second Run.
	ErrAlreadyRunning = errors.New("elector is already running")
)

// ProbeFunc asks a peer's health endpoint (url from its heartbeat Lease)
// how it sees the API server.
type ProbeFunc func(ctx context.Context, url string) (Health, error)

// Options configure an Elector. Zero fields get the documented defaults.
type Options struct {
	// Client talks to the API server (Leases only).
	Client kubernetes.Interface
	// Namespace holds the heartbeat Leases (default kube-system).
	Namespace string
	// NodeName is this node; it is the holderIdentity this agent writes.
	NodeName string
	// HeartbeatPeriod is how often the heartbeat is renewed (default 200ms):
	// this node costs the API server 1/HeartbeatPeriod writes per second.
	HeartbeatPeriod time.Duration
	// HeartbeatTimeout is how long a heartbeat may stay unchanged before
	// observers judge its node dead (default 800ms, at least 2×period).
	HeartbeatTimeout time.Duration
	// Logger receives the package's logs.
	Logger logr.Logger
	// Registerer, when set, receives the package's metrics.
	Registerer prometheus.Registerer
	// OnServiceLeaseChange is called when a Service Lease is added, updated
	// or deleted, and for each Lease of a node that just went stale: the
	// agent enqueues the Service. It must not block.
	OnServiceLeaseChange func(namespace, leaseName string)
	// OnNodeChange is called on liveness transitions of any node, this one
	// included (false when this node fences itself or shuts down). The agent
	// re-enqueues the affected Services. It must not block.
	OnNodeChange func(node string, alive bool)
	// HealthAddress is this agent's health URL as peers reach it (served by
	// HealthHandler), published on the heartbeat Lease for self-fencing.
	HealthAddress string
	// Rebalance hands a Service back to its preferred node once that node
	// has been alive for SettleTime. The zero value is false; the agent's
	// flag defaults to true.
	Rebalance bool
	// SettleTime is how long a preferred node must have been alive before
	// it gets its Services back (default 10s).
	SettleTime time.Duration
	// Clock is the observer clock (default: the real clock); for tests.
	Clock clock.WithTicker
	// Probe asks a peer's health URL (default: HTTP GET); for tests.
	Probe ProbeFunc
	// Ready reports whether this agent has synced and can serve Services
	// (default: always). It is published on the heartbeat (vip.io/ready);
	// only nodes whose heartbeat is fresh and ready are alive candidates.
	Ready func() bool
	// PeerAddressAllowed, when set, must accept the host of a peer's
	// published health URL before it is probed: a URL naming an address
	// that is no node's counts as no answer (the agent passes the Nodes'
	// addresses, so a forged heartbeat cannot steer probes elsewhere).
	PeerAddressAllowed func(netip.Addr) bool
	// PingAPI asks the API server whether this node reaches it, when no
	// peer answers the fencing probes (default: GET /livez/ping through
	// Client); for tests.
	PingAPI func(context.Context) error
	// Link, when set, judges liveness on the link instead of by heartbeat
	// freshness (see Link); HeartbeatPeriod and HeartbeatTimeout then time
	// the membership renewal (defaults 10s and 30s).
	Link Link
	// LinkAddress is this node's link address (ip:port), published on its
	// heartbeat for the peers' link monitors.
	LinkAddress string
	// LinkInterface names the interface LinkAddress is on ("" = unknown),
	// for the messages about a silent link.
	LinkInterface string
	// Recorder, when set, receives the Node Events of link mode (a link
	// silent for every node, datagrams signed with another key).
	Recorder record.EventRecorder
}

// withDefaults returns a validated copy of o with defaults filled in.
func (o Options) withDefaults() (Options, error) {
	if o.Client == nil {
		return o, fmt.Errorf("%w: no Kubernetes client", ErrInvalidOptions)
	}
	if o.NodeName == "" {
		return o, fmt.Errorf("%w: node name is empty", ErrInvalidOptions)
	}
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	if o.HeartbeatPeriod == 0 {
		o.HeartbeatPeriod = DefaultHeartbeatPeriod
		if o.Link != nil {
			o.HeartbeatPeriod = DefaultMemberPeriod
		}
	}
	if o.HeartbeatTimeout == 0 {
		o.HeartbeatTimeout = DefaultHeartbeatTimeout
		if o.Link != nil {
			o.HeartbeatTimeout = DefaultMemberTimeout
		}
	}
	if o.SettleTime == 0 {
		o.SettleTime = DefaultSettleTime
	}
	switch {
	case o.HeartbeatPeriod < 0 || o.SettleTime < 0:
		return o, fmt.Errorf("%w: negative duration", ErrInvalidOptions)
	case o.HeartbeatTimeout < 2*o.HeartbeatPeriod:
		return o, fmt.Errorf("%w: heartbeat timeout %v is less than twice the period %v",
			ErrInvalidOptions, o.HeartbeatTimeout, o.HeartbeatPeriod)
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Probe == nil {
		o.Probe = httpProbe(probeTimeout(o.HeartbeatTimeout))
	}
	if o.PingAPI == nil {
		o.PingAPI = clientPing(o.Client)
	}
	if o.Ready == nil {
		o.Ready = func() bool { return true }
	}
	if o.OnServiceLeaseChange == nil {
		o.OnServiceLeaseChange = func(string, string) {}
	}
	if o.OnNodeChange == nil {
		o.OnNodeChange = func(string, bool) {}
	}
	return o, nil
}
