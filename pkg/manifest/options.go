package manifest

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/vip-lb/vip/pkg/bgpconfig"
)

// Form is the kind of manifest to build.
type Form string

// The manifest forms.
const (
	// FormPod is the kubeadm static Pod for /etc/kubernetes/manifests.
	FormPod Form = "pod"
	// FormDaemonSet is the DaemonSet with its ServiceAccount and RBAC.
	FormDaemonSet Form = "daemonset"
	// FormK3s is the DaemonSet with its RBAC for k3s's auto-deploy folder
	// /var/lib/rancher/k3s/server/manifests (in-cluster credentials, server
	// nodes only when it holds the control-plane VIP).
	FormK3s Form = "k3s"
)

// ErrInvalid marks Options that cannot give a working manifest.
var ErrInvalid = errors.New("manifest options")

// Defaults for zero Options fields.
const (
	DefaultNamespace      = "kube-system"
	DefaultPort           = 6443
	DefaultLeaseName      = "plndr-cp-lock"
	DefaultKubeconfigPath = "/etc/kubernetes/admin.conf"
	DefaultMetricsPort    = 2112
	// SuperAdminKubeconfig is the only kubeconfig with rights on the first
	// control-plane node of kubeadm 1.29+ while `kubeadm init` runs.
	SuperAdminKubeconfig = "/etc/kubernetes/super-admin.conf"
)

// Options describe the agent a manifest runs. The zero value of every field
// but Image means the documented default.
type Options struct {
	// Image is the agent's container image (required).
	Image string
	// Namespace of the objects, the heartbeat Leases and the control-plane
	// Lease (default kube-system).
	Namespace string

	// ARP and BGP pick the advertisement mode; exactly one must be set.
	ARP, BGP bool
	// ControlPlane holds the control-plane VIP; Services serves
	// LoadBalancer Services. At least one must be set.
	ControlPlane, Services bool
	// LeaderElection, in BGP mode, lets only the control-plane Lease holder
	// advertise the control-plane VIP (else every node whose API server is
	// ready does: ECMP). ARP mode always elects.
	LeaderElection bool

	// Interface announces the VIPs ("" = the interface whose subnet covers
	// each address).
	Interface string
	// Address is the control-plane VIP: an IP address or a DNS name.
	Address string
	// DDNS obtains the address of a DNS-name Address by DHCP, sending the
	// name as host name (kube-vip's --ddns).
	DDNS bool
	// Port is the API server port (default 6443).
	Port int
	// LocalAPIServer is the URL of this node's API server, used to elect
	// the control-plane VIP holder ("" = https://127.0.0.1:Port).
	LocalAPIServer string
	// LeaseName is the control-plane Lease (default plndr-cp-lock).
	LeaseName string
	// LeaseDuration, RenewDeadline and RetryPeriod time the control-plane
	// Lease (0 = the agent's fast defaults).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration

	// InCluster uses the ServiceAccount token (DaemonSets only); otherwise
	// the host's kubeconfig file KubeconfigPath is mounted.
	InCluster bool
	// KubeconfigPath is the host file mounted as the agent's kubeconfig
	// (default /etc/kubernetes/admin.conf). On the first control-plane node
	// of kubeadm 1.29+ use SuperAdminKubeconfig.
	KubeconfigPath string
	// Taint restricts a DaemonSet to control-plane nodes and tolerates
	// their taints.
	Taint bool
	// MetricsPort is the metrics and health port (default 2112).
	MetricsPort int
	// HealthCheckPort, when set, also serves /healthz there (kube-vip's
	// health_check_port), for liveness probes written for kube-vip.
	HealthCheckPort int

	// ServicesInterface announces Service addresses (default Interface).
	ServicesInterface string
	// LBClassName and LBClassOnly choose the Services served by their
	// spec.loadBalancerClass (kube-vip's lb_class_name, lb_class_only).
	LBClassName string
	LBClassOnly bool

	// BGP settings, in kube-vip's terms.
	RouterID, RouterInterface string
	LocalAS, PeerAS           uint32
	PeerAddress, Peers        string
	// Annotations is the prefix of per-node BGP settings on Node objects.
	Annotations string
	// SourceIP and SourceIF are the local address or interface of every
	// BGP session; HoldTime and Keepalive its timers in seconds (0: the
	// agent's defaults).
	SourceIP, SourceIF  string
	HoldTime, Keepalive int
	// PasswordFile is a host file or folder with the BGP passwords
	// (bgpconfig.LoadPasswords' format), mounted into a static Pod. A
	// DaemonSet gets the passwords of Peers in a Secret instead; a static
	// Pod cannot mount Secrets, so without PasswordFile its passwords stay
	// in the Pod spec (the agent warns).
	PasswordFile string
}

// withDefaults validates o for form and fills in defaults. Every error wraps
// ErrInvalid and fits on one line.
func (o Options) withDefaults(form Form) (Options, error) {
	bad := func(format string, args ...any) (Options, error) {
		return o, fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
	}
	switch form {
	case FormPod, FormDaemonSet, FormK3s:
	default:
		return bad("unknown form %q (want pod, daemonset or k3s)", form)
	}
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	if o.Port == 0 {
		o.Port = DefaultPort
	}
	if o.LeaseName == "" {
		o.LeaseName = DefaultLeaseName
	}
	if o.MetricsPort == 0 {
		o.MetricsPort = DefaultMetricsPort
	}
	if form == FormK3s {
		o.InCluster = true
		if o.ControlPlane {
			o.Taint = true // the local API server runs on server nodes only
		}
	}
	if !o.InCluster && o.KubeconfigPath == "" {
		o.KubeconfigPath = DefaultKubeconfigPath
	}
	switch {
	case o.Image == "":
		return bad("no image")
	case o.ARP && o.BGP:
		return bad("--arp and --bgp are both set: choose one advertisement mode")
	case !o.ARP && !o.BGP:
		return bad("no advertisement mode: set --arp or --bgp")
	case !o.ControlPlane && !o.Services:
		return bad("nothing to do: set --controlplane, --services or both")
	case o.ControlPlane && o.Address == "":
		return bad("--controlplane needs --address (the control-plane VIP, an IP address or a DNS name)")
	case o.Port < 1 || o.Port > 65535:
		return bad("--port %d is not a TCP port", o.Port)
	case o.MetricsPort < 1 || o.MetricsPort > 65535:
		return bad("metrics port %d is not a TCP port", o.MetricsPort)
	case o.HealthCheckPort < 0 || o.HealthCheckPort > 65535:
		return bad("--healthCheckPort %d is not a TCP port", o.HealthCheckPort)
	case o.HoldTime < 0 || o.Keepalive < 0:
		return bad("--bgpHoldTimer and --bgpKeepAliveInterval must not be negative")
	case form == FormPod && o.InCluster:
		return bad("--inCluster needs a DaemonSet: a static Pod has no ServiceAccount token (it mounts --kubeconfig-path)")
	case form == FormPod && o.Taint:
		return bad("--taint applies to DaemonSets: a static Pod runs on the node whose manifests folder holds it")
	case form == FormDaemonSet && !o.InCluster && !o.Taint:
		return bad("a DaemonSet without --inCluster mounts %s, which only control-plane nodes have: add --taint or --inCluster", o.KubeconfigPath)
	case o.InCluster && o.KubeconfigPath != "":
		return bad("--kubeconfig-path and --inCluster are both set: choose one source of credentials")
	case o.KubeconfigPath != "" && !strings.HasPrefix(o.KubeconfigPath, "/"):
		return bad("--kubeconfig-path %q must be an absolute host path", o.KubeconfigPath)
	case o.PasswordFile != "" && !strings.HasPrefix(o.PasswordFile, "/"):
		return bad("--bgp-password-file %q must be an absolute host path", o.PasswordFile)
	case o.PasswordFile != "" && form != FormPod:
		return bad("--bgp-password-file mounts a host file into the static Pod; a DaemonSet gets the passwords of --bgppeers in the Secret %s", PasswordSecret)
	case o.PasswordFile != "" && !o.BGP:
		return bad("--bgp-password-file needs --bgp")
	case strings.ContainsAny(o.Interface, " /:\t\n") || len(o.Interface) > 15:
		return bad("--interface %q is not an interface name", o.Interface)
	}
	if o.Address != "" {
		if err := checkAddress(o.Address); err != nil {
			return bad("--address %q: %v", o.Address, err)
		}
	}
	if o.DDNS {
		switch _, err := netip.ParseAddr(o.Address); {
		case !o.ControlPlane:
			return bad("--ddns obtains the control-plane address: it needs --controlplane")
		case err == nil:
			return bad("--ddns needs a DNS name in --address (sent as DHCP host name), not the address %s", o.Address)
		case o.Interface == "":
			return bad("--ddns needs --interface: the DHCP lease is taken on a macvlan of that interface")
		case o.BGP && !o.LeaderElection:
			return bad("--ddns with --bgp needs --leaderElection: one node holds the DHCP lease")
		}
	}
	if errs := validation.IsDNS1123Subdomain(o.LeaseName); len(errs) > 0 {
		return bad("lease name %q: %s", o.LeaseName, errs[0])
	}
	if errs := validation.IsDNS1123Label(o.Namespace); len(errs) > 0 {
		return bad("namespace %q: %s", o.Namespace, errs[0])
	}
	if err := checkLease(o.LeaseDuration, o.RenewDeadline, o.RetryPeriod); err != nil {
		return bad("%v", err)
	}
	if o.BGP {
		if err := o.checkBGP(); err != nil {
			return bad("%v", err)
		}
	} else if o.RouterID != "" || o.RouterInterface != "" || o.PeerAddress != "" || o.Peers != "" || o.Annotations != "" ||
		o.SourceIP != "" || o.SourceIF != "" || o.HoldTime != 0 || o.Keepalive != 0 {
		return bad("BGP settings (--bgpRouterID, --bgppeers, --peerAddress, --annotations…) need --bgp")
	}
	return o, nil
}

// checkAddress accepts an IP address or a DNS name.
func checkAddress(s string) error {
	if a, err := netip.ParseAddr(s); err == nil {
		a = a.Unmap()
		if a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() || a.Zone() != "" {
			return errors.New("not usable as a virtual IP")
		}
		return nil
	}
	if strings.Contains(s, "/") {
		return errors.New("give the address without a prefix length")
	}
	if errs := validation.IsDNS1123Subdomain(strings.TrimSuffix(s, ".")); len(errs) > 0 {
		return errors.New("neither an IP address nor a DNS name")
	}
	return nil
}

// checkLease checks the timings that are set; unset ones are the agent's.
func checkLease(d, renew, retry time.Duration) error {
	if d < 0 || renew < 0 || retry < 0 {
		return errors.New("lease timings must not be negative")
	}
	if d > 0 && renew > 0 && renew >= d {
		return fmt.Errorf("--leaseRenewDuration (%v) must be shorter than --leaseDuration (%v)", renew, d)
	}
	if renew > 0 && retry > 0 && retry >= renew {
		return fmt.Errorf("--leaseRetry (%v) must be shorter than --leaseRenewDuration (%v)", retry, renew)
	}
	if d > 0 && retry > 0 && retry >= d {
		return fmt.Errorf("--leaseRetry (%v) must be shorter than --leaseDuration (%v)", retry, d)
	}
	return nil
}

// checkBGP checks what a manifest fixes for every node: the peers, the AS
// and the router ID, unless Node annotations supply them.
func (o Options) checkBGP() error {
	peers, err := bgpconfig.ParsePeers(o.Peers)
	if err != nil {
		return fmt.Errorf("--bgppeers: %w", err)
	}
	if o.PeerAddress != "" {
		a, err := netip.ParseAddr(o.PeerAddress)
		if err != nil {
			return fmt.Errorf("--peerAddress %q is not an IP address", o.PeerAddress)
		}
		peers = append(peers, bgpconfig.Peer{Address: a.Unmap(), AS: o.PeerAS})
	}
	if o.RouterID != "" && o.RouterInterface != "" {
		return errors.New("--bgpRouterID and --bgpRouterInterface are both set: choose one")
	}
	if o.Annotations != "" {
		return nil // the nodes may supply AS, router ID and peers
	}
	if len(peers) == 0 {
		return errors.New("--bgp needs peers: --bgppeers, --peerAddress, or --annotations for per-node peers")
	}
	if o.LocalAS == 0 {
		return errors.New("--bgp needs --localAS")
	}
	if o.RouterInterface != "" {
		return nil
	}
	if o.RouterID == "" {
		return errors.New("--bgp needs a router ID: --bgpRouterID, --bgpRouterInterface, or --annotations for per-node IDs")
	}
	id, err := netip.ParseAddr(o.RouterID)
	if err != nil || !id.Is4() || id.IsUnspecified() {
		return fmt.Errorf("--bgpRouterID %q must be a non-zero IPv4 address", o.RouterID)
	}
	for _, p := range peers {
		if p.AS == 0 {
			return fmt.Errorf("BGP peer %s has no AS (set it in --bgppeers or --peerAS)", p.Address)
		}
	}
	return nil
}
