package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/vip-lb/vip/internal/version"
	"github.com/vip-lb/vip/pkg/manifest"
)

const manifestUsage = `Usage: vip-agent manifest pod|daemonset [flags]

Prints a manifest that runs vip-agent, with kube-vip's flag names:
  pod                   kubeadm static Pod for /etc/kubernetes/manifests (mounts --kubeconfig-path)
  daemonset             DaemonSet with its ServiceAccount and RBAC (kubectl apply)
  daemonset --k3s       the same for k3s's /var/lib/rancher/k3s/server/manifests (in-cluster credentials)

Example (kubeadm, ARP, control plane and Services):
  vip-agent manifest pod --interface eth0 --address 192.168.0.40 --controlplane --services --arp --leaderElection

Flags:
`

// secondsOrDuration is a lease timing given as kube-vip's whole seconds
// ("5") or as a Go duration ("1500ms").
type secondsOrDuration struct{ d *time.Duration }

func (v secondsOrDuration) String() string {
	if v.d == nil || *v.d == 0 {
		return ""
	}
	return v.d.String()
}

func (v secondsOrDuration) Set(s string) error {
	d, err := parseSecondsOrDuration(s)
	if err != nil {
		return err
	}
	*v.d = d
	return nil
}

func (v secondsOrDuration) Type() string { return "duration" }

// parseSecondsOrDuration reads "5" as five seconds and "1.5s" or "1500ms"
// as Go durations; the result must be positive.
func parseSecondsOrDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	var d time.Duration
	if n, err := strconv.ParseInt(s, 10, 32); err == nil {
		d = time.Duration(n) * time.Second
	} else if d, err = time.ParseDuration(s); err != nil {
		return 0, fmt.Errorf("%q is neither whole seconds nor a duration such as 1500ms", s)
	}
	if d <= 0 {
		return 0, fmt.Errorf("%q is not positive", s)
	}
	return d, nil
}

// manifestFlags are the generator's flags: kube-vip's, plus vip's own.
type manifestFlags struct {
	o                        manifest.Options
	vip, address             string
	k3s, loadBalancer        bool
	servicesElection, slices bool
}

func newManifestFlags(fs *pflag.FlagSet) *manifestFlags {
	m := &manifestFlags{o: manifest.Options{
		Image: version.Image("vip-agent"), LocalAS: 65000, PeerAS: 65000,
	}}
	o := &m.o
	fs.StringVar(&o.Interface, "interface", "", "Interface that announces the addresses (default: the one whose subnet covers each address).")
	fs.StringVar(&m.address, "address", "", "Control-plane VIP: an IP address or a DNS name (resolved by the agent, and re-resolved).")
	fs.StringVar(&m.vip, "vip", "", "Older name of --address.")
	fs.IntVar(&o.Port, "port", manifest.DefaultPort, "API server port.")
	fs.BoolVar(&o.ARP, "arp", false, "Announce by gratuitous ARP / neighbour advertisements from one elected node.")
	fs.BoolVar(&o.BGP, "bgp", false, "Announce by BGP.")
	fs.BoolVar(&o.LeaderElection, "leaderElection", false, "BGP: only the control-plane Lease holder advertises the control-plane VIP (ARP always elects).")
	fs.BoolVar(&o.ControlPlane, "controlplane", false, "Hold the control-plane VIP.")
	fs.BoolVar(&o.Services, "services", false, "Serve LoadBalancer Services.")
	fs.BoolVar(&o.InCluster, "inCluster", false, "DaemonSet: use the ServiceAccount token instead of the host's kubeconfig.")
	fs.BoolVar(&o.Taint, "taint", false, "DaemonSet: run on control-plane nodes only.")
	fs.BoolVar(&m.k3s, "k3s", false, "DaemonSet for k3s's auto-deploy folder (implies --inCluster; with --controlplane, server nodes only).")
	fs.StringVar(&o.Namespace, "namespace", manifest.DefaultNamespace, "Namespace of the agent and its Leases.")
	fs.StringVar(&o.LeaseName, "leaseName", manifest.DefaultLeaseName, "Name of the control-plane Lease.")
	fs.Var(secondsOrDuration{&o.LeaseDuration}, "leaseDuration", "Control-plane Lease duration, seconds or a duration (default: the agent's, 1.5s).")
	fs.Var(secondsOrDuration{&o.RenewDeadline}, "leaseRenewDuration", "Control-plane Lease renew deadline (default: the agent's, 1s).")
	fs.Var(secondsOrDuration{&o.RetryPeriod}, "leaseRetry", "Control-plane Lease retry period (default: the agent's, 250ms).")
	fs.StringVar(&o.KubeconfigPath, "kubeconfig-path", "", "Host kubeconfig mounted into the agent (default "+manifest.DefaultKubeconfigPath+"; "+manifest.SuperAdminKubeconfig+" on the first kubeadm 1.29+ control-plane node).")
	fs.StringVar(&o.KubeconfigPath, "k8sConfigPath", "", "kube-vip's name of --kubeconfig-path (e.g. "+manifest.SuperAdminKubeconfig+").")
	fs.StringVar(&o.LocalAPIServer, "local-apiserver", "", "URL of each node's own API server for the control-plane election (default https://127.0.0.1:PORT).")
	fs.StringVar(&o.Image, "image", o.Image, "Agent image.")
	fs.StringVar(&o.RouterID, "bgpRouterID", "", "BGP router ID (IPv4).")
	fs.StringVar(&o.RouterInterface, "bgpRouterInterface", "", "Take each node's BGP router ID from this interface.")
	fs.Uint32Var(&o.LocalAS, "localAS", o.LocalAS, "Local BGP AS.")
	fs.Uint32Var(&o.PeerAS, "peerAS", o.PeerAS, "AS of --peerAddress.")
	fs.StringVar(&o.PeerAddress, "peerAddress", "", "A single BGP peer.")
	fs.StringVar(&o.Peers, "bgppeers", "", "BGP peers as address:AS:password:multihop,…")
	fs.StringVar(&o.Annotations, "annotations", "", "Read per-node BGP settings from Node annotations under this prefix.")
	fs.StringVar(&o.PasswordFile, "bgp-password-file", "", "Static Pod: host file or folder with the BGP passwords, mounted for the agent (a DaemonSet gets the passwords of --bgppeers in the Secret "+manifest.PasswordSecret+" instead).")
	fs.BoolVar(&o.DDNS, "ddns", false, "Obtain the address of the DNS name in --address by DHCP, sending the name as host name (dynamic DNS).")
	fs.BoolVar(&m.loadBalancer, "enableLoadBalancer", false, "kube-vip's IPVS control-plane balancer (not provided by vip).")
	fs.BoolVar(&m.servicesElection, "servicesElection", false, "Accepted for kube-vip compatibility: vip always elects per Service.")
	fs.BoolVar(&m.slices, "enableEndpointSlices", false, "Accepted for kube-vip compatibility: vip always reads EndpointSlices.")
	return m
}

// options checks the flags that have no Options field and returns the
// manifest's form and options.
func (m *manifestFlags) options(kind string) (manifest.Form, manifest.Options, error) {
	o := m.o
	switch {
	case m.vip != "" && m.address != "" && m.vip != m.address:
		return "", o, errors.New("--vip and --address differ: give one")
	case m.loadBalancer:
		return "", o, errors.New("--enableLoadBalancer: vip does not provide kube-vip's IPVS control-plane balancer")
	}
	o.Address = m.address
	if o.Address == "" {
		o.Address = m.vip
	}
	switch kind {
	case "pod":
		if m.k3s {
			return "", o, errors.New("--k3s makes a DaemonSet for /var/lib/rancher/k3s/server/manifests: use `vip-agent manifest daemonset --k3s`")
		}
		return manifest.FormPod, o, nil
	case "daemonset", "ds":
		if m.k3s {
			return manifest.FormK3s, o, nil
		}
		return manifest.FormDaemonSet, o, nil
	}
	return "", o, fmt.Errorf("unknown manifest %q: want pod or daemonset", kind)
}

// errHelp asks for the usage text on stdout and exit status 0.
var errHelp = pflag.ErrHelp

// parseManifestArgs reads `manifest` arguments: the form, then flags.
func parseManifestArgs(args []string) (manifest.Form, manifest.Options, error) {
	fs := pflag.NewFlagSet("vip-agent manifest", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	m := newManifestFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return "", manifest.Options{}, errHelp
		}
		return "", manifest.Options{}, err
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return "", manifest.Options{}, errors.New("which manifest? want `vip-agent manifest pod|daemonset [flags]`")
	}
	if len(rest) > 1 {
		return "", manifest.Options{}, fmt.Errorf("unexpected arguments %q", rest[1:])
	}
	return m.options(rest[0])
}

// runManifest prints the manifest the arguments describe to w.
func runManifest(args []string, w io.Writer) error {
	form, o, err := parseManifestArgs(args)
	if errors.Is(err, errHelp) {
		fs := pflag.NewFlagSet("vip-agent manifest", pflag.ContinueOnError)
		newManifestFlags(fs)
		_, _ = io.WriteString(w, manifestUsage+fs.FlagUsages())
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: %w: %w", errConfig, manifest.ErrInvalid, err)
	}
	b, err := manifest.Render(form, o)
	if err != nil {
		return fmt.Errorf("%w: %w", errConfig, err)
	}
	_, err = w.Write(b)
	return err
}
