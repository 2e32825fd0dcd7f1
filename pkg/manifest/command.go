package manifest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/vip-lb/vip/internal/version"
	"github.com/vip-lb/vip/pkg/agentconfig"
	"github.com/vip-lb/vip/pkg/bgpconfig"
	"github.com/vip-lb/vip/pkg/compat"
)

const manifestUsage = `Usage: vip-agent manifest pod|daemonset|rbac [flags]

Prints a manifest that runs vip-agent, with kube-vip's flag names:
  pod                   kubeadm static Pod for /etc/kubernetes/manifests (mounts --kubeconfig-path)
  daemonset             DaemonSet with its ServiceAccount and RBAC (kubectl apply)
  daemonset --k3s       the same for k3s's /var/lib/rancher/k3s/server/manifests (in-cluster credentials)
  rbac                  the agent's ServiceAccount and RBAC alone (--namespace, --leaseName)

An address (--vip/--address) without --controlplane or --services means the control plane, as
in kube-vip's control-plane documents. kube-vip flags vip does not provide are refused by name.

Example (kubeadm, ARP, control plane and Services):
  vip-agent manifest pod --interface eth0 --address 192.168.0.40 --controlplane --services --arp --leaderElection

Flags:
`

// manifestFlags are the generator's flags: kube-vip's, plus vip's own.
type manifestFlags struct {
	o                        Options
	vip, address             string
	k3s, loadBalancer        bool
	servicesElection, slices bool
	peerPass                 string
	multihop                 bool
	metricsAddr              string
	fs                       *pflag.FlagSet
	// compatFlags are kube-vip's other flags, registered from the
	// compatibility list: accepted, or refused unless harmless.
	compatFlags map[string]compat.Input
}

func newManifestFlags(fs *pflag.FlagSet) *manifestFlags {
	m := &manifestFlags{o: Options{
		Image: version.Image("vip-agent"), LocalAS: 65000, PeerAS: 65000,
	}}
	o := &m.o
	fs.StringVar(&o.Interface, "interface", "", "Interface that announces the addresses (default: the one whose subnet covers each address).")
	fs.StringVar(&m.address, "address", "", "Control-plane VIP: an IP address or a DNS name (resolved by the agent, and re-resolved).")
	fs.StringVar(&m.vip, "vip", "", "Older name of --address.")
	fs.IntVar(&o.Port, "port", DefaultPort, "API server port.")
	fs.BoolVar(&o.ARP, "arp", false, "Announce by gratuitous ARP / neighbour advertisements from one elected node.")
	fs.BoolVar(&o.BGP, "bgp", false, "Announce by BGP.")
	fs.BoolVar(&o.LeaderElection, "leaderElection", false, "BGP: only the control-plane Lease holder advertises the control-plane VIP (ARP always elects).")
	fs.BoolVar(&o.ControlPlane, "controlplane", false, "Hold the control-plane VIP.")
	fs.BoolVar(&o.Services, "services", false, "Serve LoadBalancer Services.")
	fs.BoolVar(&o.InCluster, "inCluster", false, "DaemonSet: use the ServiceAccount token instead of the host's kubeconfig.")
	fs.BoolVar(&o.Taint, "taint", false, "DaemonSet: run on control-plane nodes only.")
	fs.BoolVar(&m.k3s, "k3s", false, "DaemonSet for k3s's auto-deploy folder (implies --inCluster; with --controlplane, server nodes only).")
	fs.StringVar(&o.Namespace, "namespace", DefaultNamespace, "Namespace of the agent and its Leases.")
	fs.StringVar(&o.LeaseName, "leaseName", DefaultLeaseName, "Name of the control-plane Lease.")
	fs.Var(agentconfig.SecondsOrDuration{D: &o.LeaseDuration}, "leaseDuration", "Control-plane Lease duration, seconds or a duration (default: the agent's, 1.5s).")
	fs.Var(agentconfig.SecondsOrDuration{D: &o.RenewDeadline}, "leaseRenewDuration", "Control-plane Lease renew deadline (default: the agent's, 1s).")
	fs.Var(agentconfig.SecondsOrDuration{D: &o.RetryPeriod}, "leaseRetry", "Control-plane Lease retry period (default: the agent's, 250ms).")
	fs.StringVar(&o.KubeconfigPath, "kubeconfig-path", "", "Host kubeconfig mounted into the agent (default "+DefaultKubeconfigPath+"; "+SuperAdminKubeconfig+" on the first kubeadm 1.29+ control-plane node).")
	fs.StringVar(&o.KubeconfigPath, "k8sConfigPath", "", "kube-vip's name of --kubeconfig-path (e.g. "+SuperAdminKubeconfig+").")
	fs.StringVar(&o.LocalAPIServer, "local-apiserver", "", "URL of each node's own API server for the control-plane election (default https://127.0.0.1:PORT).")
	fs.StringVar(&o.Image, "image", o.Image, "Agent image.")
	fs.StringVar(&o.RouterID, "bgpRouterID", "", "BGP router ID (IPv4).")
	fs.StringVar(&o.RouterInterface, "bgpRouterInterface", "", "Take each node's BGP router ID from this interface.")
	fs.Uint32Var(&o.LocalAS, "localAS", o.LocalAS, "Local BGP AS.")
	fs.Uint32Var(&o.PeerAS, "peerAS", o.PeerAS, "AS of --peerAddress.")
	fs.StringVar(&o.PeerAddress, "peerAddress", "", "A single BGP peer.")
	fs.StringVar(&o.Peers, "bgppeers", "", "BGP peers as address:AS:password:multihop,…")
	fs.StringVar(&o.Annotations, "annotations", "", "Read per-node BGP settings from Node annotations under this prefix.")
	fs.StringVar(&o.PasswordFile, "bgp-password-file", "", "Static Pod: host file or folder with the BGP passwords, mounted for the agent (a DaemonSet gets the passwords of --bgppeers in the Secret "+PasswordSecret+" instead).")
	fs.BoolVar(&o.DDNS, "ddns", false, "Obtain the address of the DNS name in --address by DHCP, sending the name as host name (dynamic DNS).")
	fs.StringVar(&o.ServicesInterface, "serviceInterface", "", "Interface for Service addresses (default --interface).")
	fs.StringVar(&o.SourceIP, "sourceIP", "", "Local address of every BGP session.")
	fs.StringVar(&o.SourceIF, "sourceIF", "", "Bind every BGP session to this interface.")
	fs.StringVar(&m.peerPass, "peerPass", "", "TCP MD5 password of --peerAddress (a DaemonSet keeps it in the Secret "+PasswordSecret+").")
	fs.BoolVar(&m.multihop, "multihop", false, "eBGP multihop for --peerAddress.")
	fs.IntVar(&o.HoldTime, "bgpHoldTimer", 0, "BGP hold time in seconds (default: the agent's, 30).")
	fs.IntVar(&o.Keepalive, "bgpKeepAliveInterval", 0, "BGP keepalive interval in seconds (default: the agent's, 10).")
	fs.BoolVar(&o.LBClassOnly, "lbClassOnly", false, "Serve only Services of --lbClassName.")
	fs.StringVar(&o.LBClassName, "lbClassName", "", "loadBalancerClass served besides Services without a class (the agent's default: kube-vip.io/kube-vip-class).")
	fs.StringVar(&m.metricsAddr, "prometheusHTTPServer", "", "Metrics and health server, :PORT (default :2112).")
	fs.IntVar(&o.HealthCheckPort, "healthCheckPort", 0, "Also serve /healthz on this port (kube-vip's liveness port).")
	fs.StringVar(&o.Liveness, "liveness", "", `ARP mode with --services: how dead nodes are found, "link" or "lease" (default: link for a DaemonSet, with the Secret `+LinkKeySecret+` holding a random key drawn now; lease for a static Pod). Every agent of a cluster must use the same mode (docs/liveness.md).`)
	fs.StringVar(&o.LinkKeySecret, "link-key-secret", "", "--liveness=link: mount this existing Secret (key \"key\") instead of printing "+LinkKeySecret+" with a new key (regenerating then keeps the key).")
	fs.BoolVar(&m.loadBalancer, "enableLoadBalancer", false, "kube-vip's IPVS control-plane balancer (not provided by vip).")
	fs.BoolVar(&m.servicesElection, "servicesElection", false, "Accepted for kube-vip compatibility: vip always elects per address.")
	fs.BoolVar(&m.slices, "enableEndpointSlices", false, "Accepted for kube-vip compatibility: vip always reads EndpointSlices.")
	m.fs, m.compatFlags = fs, map[string]compat.Input{}
	for _, in := range compat.Of(compat.Flag) {
		if fs.Lookup(in.Name) != nil {
			continue
		}
		usage := "kube-vip's; " + string(in.Status) + ": " + in.Note
		if in.Bool {
			fs.Bool(in.Name, false, usage)
		} else {
			fs.String(in.Name, "", usage)
		}
		m.compatFlags[in.Name] = in
	}
	return m
}

// options checks the flags that have no Options field and returns the
// manifest's form and options.
func (m *manifestFlags) options(kind string) (Form, Options, error) {
	o := m.o
	switch {
	case m.vip != "" && m.address != "" && m.vip != m.address:
		return "", o, errors.New("--vip and --address differ: give one")
	case m.loadBalancer:
		return "", o, errors.New("--enableLoadBalancer: vip does not provide kube-vip's IPVS control-plane balancer")
	}
	for _, in := range compat.Of(compat.Flag) { // sorted: the same flag is named first every time
		if _, ok := m.compatFlags[in.Name]; !ok {
			continue
		}
		if f := m.fs.Lookup(in.Name); f.Changed && in.Status == compat.Refused && !in.HarmlessValue(f.Value.String()) {
			return "", o, fmt.Errorf("--%s=%s is not supported: %s", in.Name, f.Value.String(), in.Note)
		}
	}
	o.Address = m.address
	if o.Address == "" {
		o.Address = m.vip
	}
	// kube-vip's control-plane documents run `manifest pod --vip ADDRESS
	// --arp --leaderElection` without --controlplane: an address and
	// neither mode means the control plane, as in kube-vip then.
	if o.Address != "" && !o.ControlPlane && !o.Services {
		o.ControlPlane = true
	}
	if strings.EqualFold(o.Interface, "auto") {
		o.Interface = ""
	}
	if strings.EqualFold(o.ServicesInterface, "auto") {
		o.ServicesInterface = ""
	}
	if m.metricsAddr != "" {
		host, port, err := net.SplitHostPort(m.metricsAddr)
		n, perr := strconv.Atoi(port)
		if err != nil || perr != nil || host != "" {
			return "", o, fmt.Errorf("--prometheusHTTPServer %q: want :PORT (the agent listens on the node's address)", m.metricsAddr)
		}
		o.MetricsPort = n
	}
	if m.peerPass != "" || m.multihop {
		if o.PeerAddress == "" {
			return "", o, errors.New("--peerPass and --multihop apply to --peerAddress, which is not set; give per-peer values in --bgppeers")
		}
		// One peer entry carries them (its password goes to the Secret
		// of a DaemonSet like those of --bgppeers).
		a, err := netip.ParseAddr(o.PeerAddress)
		if err != nil {
			return "", o, fmt.Errorf("--peerAddress %q is not an IP address", o.PeerAddress)
		}
		p := bgpconfig.Peer{Address: a.Unmap(), AS: o.PeerAS, Password: m.peerPass}
		if m.multihop {
			p.MultihopTTL = bgpconfig.DefaultMultihopTTL
		}
		entry := bgpconfig.FormatPeers([]bgpconfig.Peer{p})
		if o.Peers != "" {
			entry += "," + o.Peers
		}
		o.Peers, o.PeerAddress = entry, ""
	}
	switch kind {
	case "pod":
		if m.k3s {
			return "", o, errors.New("--k3s makes a DaemonSet for /var/lib/rancher/k3s/server/manifests: use `vip-agent manifest daemonset --k3s`")
		}
		return FormPod, o, nil
	case "rbac":
		return formRBAC, o, nil
	case "daemonset", "ds":
		if m.k3s {
			return FormK3s, o, nil
		}
		return FormDaemonSet, o, nil
	}
	return "", o, fmt.Errorf("unknown manifest %q: want pod or daemonset", kind)
}

// errHelp asks for the usage text on stdout and exit status 0.
var errHelp = pflag.ErrHelp

// parseManifestArgs reads `manifest` arguments: the form, then flags.
func parseManifestArgs(args []string) (Form, Options, error) {
	fs := pflag.NewFlagSet("vip-agent manifest", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	m := newManifestFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return "", Options{}, errHelp
		}
		return "", Options{}, err
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return "", Options{}, errors.New("which manifest? want `vip-agent manifest pod|daemonset [flags]`")
	}
	if len(rest) > 1 {
		return "", Options{}, fmt.Errorf("unexpected arguments %q", rest[1:])
	}
	return m.options(rest[0])
}

// Command is `vip-agent manifest`: it prints the manifest the arguments
// describe to w (the usage text for --help). Errors wrap
// agentconfig.ErrConfig and ErrInvalid and fit on one line.
func Command(args []string, w io.Writer) error {
	form, o, err := parseManifestArgs(args)
	if errors.Is(err, errHelp) {
		fs := pflag.NewFlagSet("vip-agent manifest", pflag.ContinueOnError)
		newManifestFlags(fs)
		_, _ = io.WriteString(w, manifestUsage+fs.FlagUsages())
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: %w: %w", agentconfig.ErrConfig, ErrInvalid, err)
	}
	var b []byte
	if form == formRBAC {
		b, err = RenderRBAC(o.Namespace, o.LeaseName)
	} else if b, err = Render(form, o); err == nil {
		err = checkWithAgent(form, o)
	}
	if err != nil {
		return fmt.Errorf("%w: %w", agentconfig.ErrConfig, err)
	}
	_, err = w.Write(b)
	return err
}
