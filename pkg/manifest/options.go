package manifest

import (
	"cmp"
	"errors"
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/vip-lb/vip/pkg/agentconfig"
	"github.com/vip-lb/vip/pkg/controlplane"
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

	// Liveness is how ARP mode finds dead nodes (docs/liveness.md): "link"
	// (authenticated heartbeats on the link; the heartbeat Lease renewed
	// every 10s+) or "lease" (a heartbeat Lease renewed 5 times a second).
	// Default: link for a DaemonSet serving Services in ARP mode, with the
	// Secret LinkKeySecret holding a key drawn at rendering; lease
	// otherwise (a static Pod cannot mount the Secret).
	Liveness string
	// LinkKeySecret, in link mode, is an existing Secret holding the key
	// under LinkKeyItem: the manifest mounts it and carries no key.
	LinkKeySecret string
}

// withDefaults validates o for form and fills in defaults. Every error wraps
// ErrInvalid and fits on one line. The rules the agent applies too (the
// control-plane address, dynamic DNS, the Lease timings) are the agent's
// own, from pkg/agentconfig.
func (o Options) withDefaults(form Form) (Options, error) {
	switch form {
	case FormPod, FormDaemonSet, FormK3s:
	default:
		return o, fmt.Errorf("%w: unknown form %q (want pod, daemonset or k3s)", ErrInvalid, form)
	}
	o = o.defaults(form)
	for _, check := range []func(Form) error{o.checkModes, o.checkPorts, o.checkCredentials, o.checkControlPlane, o.checkBGPFlags, o.checkLiveness} {
		if err := check(form); err != nil {
			return o, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	}
	return o, nil
}

// defaults fills the zero fields that have a default for form.
func (o Options) defaults(form Form) Options {
	o.Namespace = cmp.Or(o.Namespace, DefaultNamespace)
	o.Port = cmp.Or(o.Port, DefaultPort)
	o.LeaseName = cmp.Or(o.LeaseName, DefaultLeaseName)
	o.MetricsPort = cmp.Or(o.MetricsPort, DefaultMetricsPort)
	if form == FormK3s {
		o.InCluster = true
		o.Taint = o.Taint || o.ControlPlane // the local API server runs on server nodes only
	}
	if !o.InCluster {
		o.KubeconfigPath = cmp.Or(o.KubeconfigPath, DefaultKubeconfigPath)
	}
	o.Liveness = cmp.Or(o.Liveness, defaultLiveness(form, o))
	return o
}

// rule is one check: broken says it fails, msg why.
type rule struct {
	broken bool
	msg    string
}

// firstBroken returns the message of the first broken rule as an error.
func firstBroken(rules ...rule) error {
	for _, r := range rules {
		if r.broken {
			return errors.New(r.msg)
		}
	}
	return nil
}

func (o Options) checkModes(Form) error {
	return firstBroken(
		rule{o.Image == "", "no image"},
		rule{o.ARP && o.BGP, "--arp and --bgp are both set: choose one advertisement mode"},
		rule{!o.ARP && !o.BGP, "no advertisement mode: set --arp or --bgp"},
		rule{!o.ControlPlane && !o.Services, "nothing to do: set --controlplane, --services or both"},
		rule{o.ControlPlane && o.Address == "", "--controlplane needs --address (the control-plane VIP, an IP address or a DNS name)"},
		rule{strings.ContainsAny(o.Interface, " /:\t\n") || len(o.Interface) > 15, fmt.Sprintf("--interface %q is not an interface name", o.Interface)},
	)
}

func (o Options) checkPorts(Form) error {
	notPort := func(p int) bool { return p < 1 || p > 65535 }
	return firstBroken(
		rule{notPort(o.Port), fmt.Sprintf("--port %d is not a TCP port", o.Port)},
		rule{notPort(o.MetricsPort), fmt.Sprintf("metrics port %d is not a TCP port", o.MetricsPort)},
		rule{o.HealthCheckPort != 0 && notPort(o.HealthCheckPort), fmt.Sprintf("--healthCheckPort %d is not a TCP port", o.HealthCheckPort)},
		rule{o.HoldTime < 0 || o.Keepalive < 0, "--bgpHoldTimer and --bgpKeepAliveInterval must not be negative"},
	)
}

func (o Options) checkCredentials(form Form) error {
	return firstBroken(
		rule{form == FormPod && o.InCluster, "--inCluster needs a DaemonSet: a static Pod has no ServiceAccount token (it mounts --kubeconfig-path)"},
		rule{form == FormPod && o.Taint, "--taint applies to DaemonSets: a static Pod runs on the node whose manifests folder holds it"},
		rule{form == FormDaemonSet && !o.InCluster && !o.Taint, fmt.Sprintf("a DaemonSet without --inCluster mounts %s, which only control-plane nodes have: add --taint or --inCluster", o.KubeconfigPath)},
		rule{o.InCluster && o.KubeconfigPath != "", "--kubeconfig-path and --inCluster are both set: choose one source of credentials"},
		rule{o.KubeconfigPath != "" && !strings.HasPrefix(o.KubeconfigPath, "/"), fmt.Sprintf("--kubeconfig-path %q must be an absolute host path", o.KubeconfigPath)},
		rule{o.PasswordFile != "" && !strings.HasPrefix(o.PasswordFile, "/"), fmt.Sprintf("--bgp-password-file %q must be an absolute host path", o.PasswordFile)},
		rule{o.PasswordFile != "" && form != FormPod, "--bgp-password-file mounts a host file into the static Pod; a DaemonSet gets the passwords of --bgppeers in the Secret " + PasswordSecret},
		rule{o.PasswordFile != "" && !o.BGP, "--bgp-password-file needs --bgp"},
	)
}

// checkControlPlane checks the control-plane settings by the agent's rules.
func (o Options) checkControlPlane(Form) error {
	if o.Address != "" {
		if err := controlplane.CheckAddress(o.Address); err != nil {
			return fmt.Errorf("--address %q %w", o.Address, err)
		}
	}
	if o.DDNS && !o.ControlPlane {
		return errors.New("--ddns obtains the control-plane address: it needs --controlplane")
	}
	if o.DDNS {
		if err := controlplane.CheckDDNS(o.Address, o.Interface, o.BGP && !o.LeaderElection); err != nil {
			return fmt.Errorf("--ddns %w", err)
		}
	}
	if errs := validation.IsDNS1123Subdomain(o.LeaseName); len(errs) > 0 {
		return fmt.Errorf("lease name %q: %s", o.LeaseName, errs[0])
	}
	if errs := validation.IsDNS1123Label(o.Namespace); len(errs) > 0 {
		return fmt.Errorf("namespace %q: %s", o.Namespace, errs[0])
	}
	// Unset timings are the agent's defaults, checked with the ones set.
	agent := agentconfig.Default()
	d := cmp.Or(o.LeaseDuration, agent.LeaseDuration)
	renew := cmp.Or(o.RenewDeadline, agent.RenewDeadline)
	retry := cmp.Or(o.RetryPeriod, agent.RetryPeriod)
	if err := controlplane.CheckLeaseTimings(d, renew, retry); err != nil {
		return fmt.Errorf("--leaseDuration, --leaseRenewDuration, --leaseRetry: %w", err)
	}
	return nil
}

// checkBGPFlags checks the BGP settings with --bgp, and refuses them
// without it.
func (o Options) checkBGPFlags(Form) error {
	if o.BGP {
		return o.checkBGP()
	}
	if o.RouterID != "" || o.RouterInterface != "" || o.PeerAddress != "" || o.Peers != "" || o.Annotations != "" ||
		o.SourceIP != "" || o.SourceIF != "" || o.HoldTime != 0 || o.Keepalive != 0 {
		return errors.New("BGP settings (--bgpRouterID, --bgppeers, --peerAddress, --annotations…) need --bgp")
	}
	return nil
}

// checkBGP checks the BGP settings a manifest gives every node by the
// agent's own rule (agentconfig.BGPConfig.Validate), so the rule lives once;
// the generator's BGP flags carry the agent's names. Unset values are the
// agent's defaults, as in the rendered container. A router interface only
// exists on the node: a documentation address (192.0.2.1, only parsed)
// stands in for its address, as in checkWithAgent.
func (o Options) checkBGP() error {
	b := agentconfig.Default().Peering
	b.RouterID, b.RouterInterface = o.RouterID, o.RouterInterface
	if o.RouterID == "" && o.RouterInterface != "" {
		b.RouterID, b.RouterInterface = "192.0.2.1", ""
	}
	b.LocalAS = cmp.Or(o.LocalAS, b.LocalAS)
	b.PeerAS = cmp.Or(o.PeerAS, b.PeerAS)
	b.PeerAddress, b.Peers, b.Annotations = o.PeerAddress, o.Peers, o.Annotations
	b.SourceIP, b.SourceIF = o.SourceIP, o.SourceIF
	b.HoldTime = cmp.Or(o.HoldTime, b.HoldTime)
	b.Keepalive = cmp.Or(o.Keepalive, b.Keepalive)
	if err := b.Validate(); err != nil {
		// withDefaults and Command add the sentinels; keep the agent's words.
		return errors.New("--bgp: " + strings.TrimPrefix(err.Error(), agentconfig.ErrConfig.Error()+": "))
	}
	return nil
}
