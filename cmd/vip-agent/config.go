package main

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/vip-lb/vip/pkg/announce/probe"
	"github.com/vip-lb/vip/pkg/compat"
	"github.com/vip-lb/vip/pkg/controlplane"
)

// errConfig marks a configuration the agent refuses to start with.
var errConfig = errors.New("invalid configuration")

// config is everything the command line and the environment can set.
type config struct {
	kubeconfig, nodeName, namespace   string
	arp, bgp, services, controlPlane  bool
	iface, servicesIface              string
	allowedIfaces                     []string
	heartbeatPeriod, heartbeatTimeout time.Duration
	probeTimeout                      time.Duration
	rebalance                         bool
	settle                            time.Duration
	metricsAddr, healthAdvertise      string
	nodeAddress                       string
	statePath                         string
	classOnly                         bool
	className                         string
	cmName, cmNamespace               string
	garpCount                         int
	garpInterval                      time.Duration
	workers                           int
	qps                               float32
	burst                             int
	// kube-vip's lease timings: they time the control-plane Lease; Service
	// failover follows node heartbeats instead. In BGP mode leaderElection
	// says whether only the Lease holder advertises the control-plane VIP.
	leaderElection, svcElection               bool
	leaseDuration, renewDeadline, retryPeriod time.Duration
	// cp is the control-plane part (controlplane.go).
	cp cpConfig
	// bgpc is the BGP mode's part (bgp.go).
	bgpc bgpConfig
	// upnp is the UPnP part (upnp.go).
	upnp upnpConfig
	// servicesSet records that --services (svc_enable) was given: without
	// it, --controlplane (cp_enable) alone means Services off, as kube-vip.
	servicesSet bool
	// servicesNamespace limits the Services served (kube-vip's svc_namespace).
	servicesNamespace string
	// healthPort serves /healthz on a second port (kube-vip's health_check_port).
	healthPort int
	// cred says where the API credentials come from (credentials.go),
	// chosen once by resolveCredentials.
	cred credentialSource
}

func defaultConfig() config {
	return config{
		namespace: "kube-system", services: true,
		heartbeatPeriod: 200 * time.Millisecond, heartbeatTimeout: 800 * time.Millisecond,
		probeTimeout: probe.DefaultTimeout,
		rebalance:    true, settle: 10 * time.Second,
		metricsAddr: ":2112", cmName: "kubevip", cmNamespace: "kube-system",
		garpCount: 3, garpInterval: 150 * time.Millisecond, workers: 8, qps: 100, burst: 200,
		className:      "kube-vip.io/kube-vip-class",
		leaderElection: true, svcElection: true, leaseDuration: controlplane.DefaultLeaseDuration,
		renewDeadline: controlplane.DefaultRenewDeadline, retryPeriod: controlplane.DefaultRetryPeriod,
		cp:   defaultCPConfig(),
		bgpc: defaultBGPConfig(),
		upnp: defaultUPnPConfig(),
	}
}

func (c *config) flags(fs *pflag.FlagSet) {
	fs.StringVar(&c.kubeconfig, "kubeconfig", c.kubeconfig, "Kubeconfig file (env KUBECONFIG, k8s_config_file; default: in-cluster, else "+kubeadmKubeconfig+").")
	fs.StringVar(&c.kubeconfig, "k8sConfigPath", c.kubeconfig, "kube-vip's name of --kubeconfig.")
	fs.StringVar(&c.nodeName, "node-name", c.nodeName, "This node's name (env NODE_NAME, vip_nodename; default: host name).")
	fs.StringVar(&c.namespace, "namespace", c.namespace, "Namespace of the node heartbeat Leases (env cp_namespace).")
	fs.BoolVar(&c.arp, "arp", c.arp, "Announce Service addresses by ARP/NDP from one elected node (env vip_arp).")
	fs.BoolVar(&c.bgp, "bgp", c.bgp, "Announce Service addresses by BGP from every eligible node (env bgp_enable).")
	fs.Var(trackedBool{&c.services, &c.servicesSet}, "services", "Serve LoadBalancer Services (env svc_enable; default true, false with --controlplane as kube-vip).")
	fs.Lookup("services").NoOptDefVal = "true"
	fs.BoolVar(&c.controlPlane, "controlplane", c.controlPlane, "Hold the control-plane VIP (env cp_enable).")
	fs.StringVar(&c.iface, "interface", c.iface, "Announcing interface (env vip_interface; default: the interface whose subnet covers the VIP).")
	fs.StringVar(&c.servicesNamespace, "services-namespace", c.servicesNamespace, "Serve only the Services of this namespace (env svc_namespace; default: every namespace).")
	fs.IntVar(&c.healthPort, "health-check-port", c.healthPort, "Also serve /healthz on this port, for a liveness probe there (env health_check_port; 0: off).")
	fs.StringVar(&c.servicesIface, "services-interface", c.servicesIface, "Interface for Service VIPs, overriding --interface (env vip_servicesinterface).")
	fs.StringSliceVar(&c.allowedIfaces, "allowed-interfaces", c.allowedIfaces, "Interfaces a Service may name with kube-vip.io/serviceInterface, comma-separated (env vip_allowed_interfaces), besides --interface, --services-interface and the pools ConfigMap's interface-* values; any other is refused with an InterfaceNotAllowed Warning.")
	fs.DurationVar(&c.heartbeatPeriod, "heartbeat-period", c.heartbeatPeriod, "How often this node renews its heartbeat Lease (one API write each).")
	fs.DurationVar(&c.heartbeatTimeout, "heartbeat-timeout", c.heartbeatTimeout, "How long a silent heartbeat means a dead node (failover time).")
	fs.DurationVar(&c.probeTimeout, "address-probe-timeout", c.probeTimeout, "ARP mode: before the first announcement of an address no vip node held, wait this long for another host to answer an RFC 5227 ARP probe / DAD neighbour solicitation (0 = do not probe). Takeovers never probe.")
	fs.BoolVar(&c.rebalance, "rebalance", c.rebalance, "Give a Service back to its preferred node once that node has been alive for --settle-time.")
	fs.DurationVar(&c.settle, "settle-time", c.settle, "How long a returning node must be alive before Services move back to it.")
	fs.StringVar(&c.metricsAddr, "metrics-address", c.metricsAddr, "Address of the metrics and health server (env prometheus_server; empty: off). Without a host (\":2112\") it listens on this node's address only (--node-address); \"0.0.0.0:2112\" listens on every interface.")
	fs.StringVar(&c.nodeAddress, "node-address", c.nodeAddress, "This node's address (env NODE_IP; the DaemonSet passes status.hostIP): a --metrics-address without a host listens there (default: this host's address towards the API server).")
	fs.StringVar(&c.healthAdvertise, "health-advertise-address", c.healthAdvertise, "Address peers use to reach this agent's health server (default: this node's address towards the API server).")
	fs.StringVar(&c.statePath, "state-file", c.statePath, "File recording the addresses this agent bound (default /run/vip-agent/<node>.json).")
	fs.BoolVar(&c.classOnly, "lb-class-only", c.classOnly, "Serve only Services of --lb-class-name (env lb_class_only).")
	fs.StringVar(&c.className, "lb-class-name", c.className, "loadBalancerClass served besides unclassed Services (env lb_class_name).")
	fs.StringVar(&c.cmName, "config-map-name", c.cmName, "Pools ConfigMap, read for interface-<namespace> keys.")
	fs.StringVar(&c.cmNamespace, "config-map-namespace", c.cmNamespace, "Namespace of the pools ConfigMap.")
	fs.IntVar(&c.garpCount, "garp-count", c.garpCount, "Gratuitous ARP / NA rounds per announcement.")
	fs.DurationVar(&c.garpInterval, "garp-interval", c.garpInterval, "Pause between gratuitous ARP / NA rounds.")
	fs.IntVar(&c.workers, "workers", c.workers, "Parallel Service reconcilers.")
	fs.Float32Var(&c.qps, "kube-api-qps", c.qps, "Client rate limit towards the API server.")
	fs.IntVar(&c.burst, "kube-api-burst", c.burst, "Client burst towards the API server.")
	fs.BoolVar(&c.leaderElection, "leader-election", c.leaderElection, "kube-vip compatibility (env vip_leaderelection); vip always elects per Service.")
	fs.BoolVar(&c.svcElection, "service-election", c.svcElection, "kube-vip compatibility (env svc_election); vip always elects per Service.")
	fs.Var(secondsOrDuration{&c.leaseDuration}, "lease-duration", "Control-plane Lease duration: whole seconds as kube-vip, or a duration (env vip_leaseduration). Service failover follows --heartbeat-timeout.")
	fs.Var(secondsOrDuration{&c.renewDeadline}, "lease-renew-deadline", "Control-plane Lease renew deadline (env vip_renewdeadline).")
	fs.Var(secondsOrDuration{&c.retryPeriod}, "lease-retry-period", "Control-plane Lease renewal period (env vip_retryperiod).")
	c.cp.flags(fs)
	c.bgpc.flags(fs)
	c.upnp.flags(fs)
}

// envFlags maps kube-vip's environment variables onto flags. A flag given on
// the command line wins over the environment.
var envFlags = map[string]string{
	"KUBECONFIG": "kubeconfig", "k8s_config_file": "kubeconfig",
	"NODE_NAME": "node-name", "vip_nodename": "node-name",
	"cp_namespace": "namespace",
	"vip_arp":      "arp", "bgp_enable": "bgp", "svc_enable": "services", "cp_enable": "controlplane",
	"vip_interface": "interface", "vip_servicesinterface": "services-interface", "vip_allowed_interfaces": "allowed-interfaces",
	"prometheus_server": "metrics-address", "NODE_IP": "node-address",
	"svc_namespace": "services-namespace", "health_check_port": "health-check-port",
	"lb_class_only": "lb-class-only", "lb_class_name": "lb-class-name",
	"vip_leaderelection": "leader-election", "svc_election": "service-election",
	"vip_leaseduration": "lease-duration", "vip_renewdeadline": "lease-renew-deadline", "vip_retryperiod": "lease-retry-period",
}

// flagAliases are flags that set another flag's value (kube-vip's names).
var flagAliases = map[string]string{"k8sConfigPath": "kubeconfig"}

// environment is where the kube-vip-style settings are read from: the
// process's own at start, a manifest container's in the generator's check.
// Every check of the environment goes through it, never through os directly.
type environment struct {
	lookup func(string) (string, bool)
	names  func() []string // every variable set, for checks that refuse unknown names
}

// processEnv is the agent's own environment.
func processEnv() environment {
	return environment{lookup: os.LookupEnv, names: func() []string {
		out := []string{}
		for _, kv := range os.Environ() {
			name, _, _ := strings.Cut(kv, "=")
			out = append(out, name)
		}
		return out
	}}
}

// mapEnv is an environment given as name/value pairs.
func mapEnv(m map[string]string) environment {
	return environment{
		lookup: func(k string) (string, bool) { v, ok := m[k]; return v, ok },
		names:  func() []string { return slices.Sorted(maps.Keys(m)) },
	}
}

// applyEnv sets every flag not given on the command line from env, and
// refuses what env sets that vip does not provide.
func applyEnv(fs *pflag.FlagSet, e environment) error {
	env := e.lookup
	cmdline := map[string]bool{}
	fs.Visit(func(f *pflag.Flag) {
		cmdline[f.Name] = true
		if to, ok := flagAliases[f.Name]; ok {
			cmdline[to] = true
		}
	})
	all := maps.Clone(envFlags)
	maps.Copy(all, bgpEnvFlags)
	maps.Copy(all, cpEnvFlags)
	maps.Copy(all, upnpEnvFlags)
	names := make([]string, 0, len(all))
	for k := range all {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, name := range names {
		v, ok := env(name)
		if !ok {
			continue
		}
		fl := fs.Lookup(all[name])
		if fl == nil || cmdline[fl.Name] {
			continue
		}
		if fl.Value.Type() == "bool" && strings.TrimSpace(v) == "" {
			continue
		}
		if err := fl.Value.Set(strings.TrimSpace(v)); err != nil {
			return fmt.Errorf("%w: environment %s=%q: %v", errConfig, name, v, err)
		}
		fl.Changed = true
	}
	for _, in := range compat.Of(compat.Env) {
		v, ok := env(in.Name)
		if !ok || in.Status != compat.Refused || in.HarmlessValue(v) {
			continue
		}
		return fmt.Errorf("%w: environment %s=%q is not supported: %s", errConfig, in.Name, v, in.Note)
	}
	if fl := fs.Lookup("bgp"); fl != nil && fl.Value.String() == "true" {
		return checkBGPEnv(e)
	}
	return nil
}

// acceptedEnv lists the kube-vip variables set in env that vip accepts
// without effect (its design already does what they ask), for one log line.
func acceptedEnv(env func(string) (string, bool)) []string {
	var out []string
	for _, in := range compat.Of(compat.Env) {
		if _, ok := env(in.Name); ok && in.Status == compat.Accepted {
			out = append(out, in.Name)
		}
	}
	return out
}

// validate checks the combination and fills derived defaults.
func (c *config) validate() error {
	if c.arp && c.bgp {
		return fmt.Errorf("%w: --arp (vip_arp) and --bgp (bgp_enable) both set: choose one advertisement mode", errConfig)
	}
	if !c.arp && !c.bgp {
		return fmt.Errorf("%w: no advertisement mode: set --arp (vip_arp=true) or --bgp (bgp_enable=true)", errConfig)
	}
	if c.bgp {
		if err := c.bgpc.validate(); err != nil {
			return err
		}
	}
	if c.controlPlane {
		if err := c.cp.validate(c); err != nil {
			return err
		}
	}
	if err := c.upnp.validate(c); err != nil {
		return err
	}
	// kube-vip's interface value "auto" is vip's default: the interface
	// whose subnet covers each address.
	if strings.EqualFold(c.iface, "auto") {
		c.iface = ""
	}
	if strings.EqualFold(c.servicesIface, "auto") {
		c.servicesIface = ""
	}
	if c.healthPort < 0 || c.healthPort > 65535 {
		return fmt.Errorf("%w: --health-check-port (health_check_port) %d is not a TCP port", errConfig, c.healthPort)
	}
	if c.controlPlane && !c.servicesSet {
		c.services = false // kube-vip's default: svc_enable is false unless set
	}
	if !c.services && !c.controlPlane {
		return fmt.Errorf("%w: --services=false (svc_enable=false) without --controlplane (cp_enable) leaves nothing to do", errConfig)
	}
	if c.arp && c.services && c.metricsAddr == "" {
		return fmt.Errorf("%w: --metrics-address (prometheus_server) must not be empty in ARP mode: peers probe this agent's health there before deciding it is cut off", errConfig)
	}
	if c.nodeAddress != "" {
		if _, err := netip.ParseAddr(c.nodeAddress); err != nil {
			return fmt.Errorf("%w: --node-address (NODE_IP) %q is not an IP address", errConfig, c.nodeAddress)
		}
	}
	if c.heartbeatPeriod <= 0 || c.heartbeatTimeout < 2*c.heartbeatPeriod {
		return fmt.Errorf("%w: --heartbeat-timeout (%v) must be at least twice --heartbeat-period (%v)", errConfig, c.heartbeatTimeout, c.heartbeatPeriod)
	}
	if c.leaseDuration <= 0 || c.renewDeadline <= 0 || c.retryPeriod <= 0 || c.renewDeadline >= c.leaseDuration || c.retryPeriod >= c.renewDeadline {
		return fmt.Errorf("%w: lease timings must satisfy 0 < retry (%v) < renew deadline (%v) < duration (%v)", errConfig, c.retryPeriod, c.renewDeadline, c.leaseDuration)
	}
	if c.garpCount < 1 || c.garpInterval < 0 || c.workers < 1 {
		return fmt.Errorf("%w: --garp-count and --workers must be positive", errConfig)
	}
	if c.classOnly && c.className == "" {
		return fmt.Errorf("%w: --lb-class-only needs --lb-class-name", errConfig)
	}
	if c.nodeName == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return fmt.Errorf("%w: no node name: set --node-name or NODE_NAME", errConfig)
		}
		c.nodeName = strings.ToLower(h)
	}
	if c.statePath == "" {
		c.statePath = "/run/vip-agent/" + c.nodeName + ".json"
	}
	return nil
}

// trackedBool is a bool flag that records whether it was set (on the
// command line or from the environment).
type trackedBool struct{ v, set *bool }

func (b trackedBool) String() string {
	if b.v == nil {
		return "false"
	}
	return strconv.FormatBool(*b.v)
}

func (b trackedBool) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return err
	}
	*b.v, *b.set = v, true
	return nil
}

func (b trackedBool) Type() string     { return "bool" }
func (b trackedBool) IsBoolFlag() bool { return true }
