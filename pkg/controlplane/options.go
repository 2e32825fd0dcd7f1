package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"

	"github.com/vip-lb/vip/pkg/announce"
	"github.com/vip-lb/vip/pkg/dhcp"
)

// Defaults for zero Options fields.
const (
	DefaultNamespace     = "kube-system"
	DefaultLeaseName     = "plndr-cp-lock"
	DefaultLeaseDuration = 1500 * time.Millisecond
	DefaultRenewDeadline = 1000 * time.Millisecond
	DefaultRetryPeriod   = 250 * time.Millisecond
	DefaultProbePeriod   = 250 * time.Millisecond
	DefaultProbeTimeout  = 1000 * time.Millisecond
	DefaultProbeFailures = 2
	DefaultResolvePeriod = 10 * time.Second
	// Owner is the announcer owner of the control-plane VIP.
	Owner = "control-plane"
	// checkInterval is how often the elector looks at the Lease between
	// events (expiry is judged at this granularity).
	checkInterval = 50 * time.Millisecond
	// retryInterval paces announcement retries after a failure.
	retryInterval = time.Second
)

// ErrInvalidOptions marks Options that New refuses.
var ErrInvalidOptions = errors.New("invalid control-plane options")

// ProbeFunc reports whether this node's API server is ready (nil = ready).
type ProbeFunc func(ctx context.Context) error

// ResolveFunc resolves a host name to addresses.
type ResolveFunc func(ctx context.Context, host string) ([]netip.Addr, error)

// Options configure a Controller. Zero fields get the documented defaults.
type Options struct {
	// Client talks to this node's own API server (Leases and /readyz). Each
	// request carries its own deadline, so its rest.Config needs no Timeout
	// (which would also cut the Lease watch).
	Client kubernetes.Interface
	// Namespace and LeaseName locate the Lease (kube-system/plndr-cp-lock).
	Namespace, LeaseName string
	// Identity is this node's holderIdentity (its node name).
	Identity string
	// Address is the VIP: an IP address, or a DNS name resolved every
	// ResolvePeriod (the VIP follows the record).
	Address string
	// Interface announces the VIP ("" = the interface whose subnet covers it).
	Interface string
	// Announcer binds and announces the VIP (shared with Service mode: the
	// owner is Owner).
	Announcer announce.Announcer
	// EveryReadyNode announces from every node whose API server is ready,
	// without election (BGP ECMP). The default elects one holder.
	EveryReadyNode bool
	// LeaseDuration is how long followers wait after they last saw the Lease
	// change before taking it (default 1.5s); RenewDeadline is how long the
	// holder keeps announcing without a successful renewal (default 1s, less
	// than LeaseDuration); RetryPeriod is the renewal period (default 250ms).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// ProbePeriod, ProbeTimeout and ProbeFailures: the API server's /readyz
	// is asked every ProbePeriod (default 250ms, timeout 1s); after
	// ProbeFailures consecutive failures (default 2) this node steps down.
	ProbePeriod, ProbeTimeout time.Duration
	ProbeFailures             int
	// ResolvePeriod is how often a DNS Address is resolved again (10s).
	ResolvePeriod time.Duration
	// DDNS, when set, obtains the address of a DNS-name Address by DHCP
	// (kube-vip's --ddns): the node holding the Lease keeps a lease on
	// DDNSInterface with the name's first label as host name, so a DHCP
	// server that registers host names in DNS (dnsmasq does) makes the name
	// resolve to the leased address, which the resolver then follows.
	DDNS          DDNS
	DDNSInterface string
	// Probe replaces the /readyz request (tests).
	Probe ProbeFunc
	// Resolve replaces the DNS resolver (tests).
	Resolve ResolveFunc
	// Clock replaces the real clock (tests).
	Clock clock.WithTicker
	// Logger receives the package's logs; Registerer, when set, its metrics.
	Logger     logr.Logger
	Registerer prometheus.Registerer
}

// withDefaults returns a validated copy of o with defaults filled in.
func (o Options) withDefaults() (Options, error) {
	bad := func(format string, args ...any) (Options, error) {
		return o, fmt.Errorf("%w: "+format, append([]any{ErrInvalidOptions}, args...)...)
	}
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	if o.LeaseName == "" {
		o.LeaseName = DefaultLeaseName
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&o.LeaseDuration, DefaultLeaseDuration)
	def(&o.RenewDeadline, DefaultRenewDeadline)
	def(&o.RetryPeriod, DefaultRetryPeriod)
	def(&o.ProbePeriod, DefaultProbePeriod)
	def(&o.ProbeTimeout, DefaultProbeTimeout)
	def(&o.ResolvePeriod, DefaultResolvePeriod)
	if o.ProbeFailures == 0 {
		o.ProbeFailures = DefaultProbeFailures
	}
	switch {
	case o.Client == nil && (o.Probe == nil || !o.EveryReadyNode):
		return bad("no Kubernetes client for the local API server")
	case o.Announcer == nil:
		return bad("no announcer")
	case o.Identity == "":
		return bad("identity (node name) is empty")
	case o.Address == "":
		return bad("no address")
	case o.LeaseDuration < 0 || o.RenewDeadline < 0 || o.RetryPeriod < 0 || o.ProbePeriod < 0 || o.ProbeTimeout < 0 || o.ResolvePeriod < 0 || o.ProbeFailures < 0:
		return bad("negative timing")
	}
	if err := CheckLeaseTimings(o.LeaseDuration, o.RenewDeadline, o.RetryPeriod); err != nil {
		return bad("%v", err)
	}
	if o.DDNS != nil {
		if err := CheckDDNS(o.Address, o.DDNSInterface, o.EveryReadyNode); err != nil {
			return bad("dynamic DNS %v", err)
		}
	}
	if err := CheckAddress(o.Address); err != nil {
		return bad("address %q %v", o.Address, err)
	}
	if o.Probe == nil {
		o.Probe = readyzProbe(o.Client, o.ProbeTimeout)
	}
	if o.Resolve == nil {
		o.Resolve = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	return o, nil
}

// DDNS is what the controller needs from *dhcp.Manager.
type DDNS interface {
	Ensure(key string, p dhcp.Params) error
	Stop(key string, release bool)
}

// ddnsKey is the DHCP key of the control-plane address: the same on every
// node, so the holder's successor gets the same MAC, client ID and address.
func (o Options) ddnsKey() string { return "control-plane/" + strings.TrimSuffix(o.Address, ".") }

// ddnsHostname is the host name sent in option 12: the name's first label.
func (o Options) ddnsHostname() string { return strings.SplitN(o.Address, ".", 2)[0] }

// readyzProbe asks the API server's /readyz.
func readyzProbe(client kubernetes.Interface, timeout time.Duration) ProbeFunc {
	return func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		rc := client.Discovery().RESTClient()
		if rc == nil {
			return errors.New("no REST client")
		}
		_, err := rc.Get().AbsPath("/readyz").Timeout(timeout).DoRaw(ctx)
		return err
	}
}
