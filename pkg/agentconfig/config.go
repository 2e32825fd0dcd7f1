package agentconfig

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

	"github.com/vip-lb/vip/pkg/agent"
	"github.com/vip-lb/vip/pkg/announce/probe"
	"github.com/vip-lb/vip/pkg/compat"
	"github.com/vip-lb/vip/pkg/controlplane"
)

// ErrConfig marks a configuration the agent refuses to start with (exit
// status 2).
var ErrConfig = errors.New("invalid configuration")

// Config is everything vip-agent's command line and environment (kube-vip's
// variable names included) can set. Default gives the defaults, AddFlags the
// flags, ApplyEnv the environment and Validate the checks; Parse does all
// four. vip-agent runs with it and `vip-agent manifest` checks the manifests
// it writes with it, so each rule lives here once.
type Config struct {
	Kubeconfig, NodeName, Namespace   string
	ARP, BGP, Services, ControlPlane  bool
	Interface, ServicesInterface      string
	AllowedInterfaces                 []string
	HeartbeatPeriod, HeartbeatTimeout time.Duration
	ProbeTimeout                      time.Duration
	Rebalance                         bool
	Settle                            time.Duration
	MetricsAddress, HealthAdvertise   string
	NodeAddress                       string
	StatePath                         string
	ClassOnly                         bool
	ClassName                         string
	ConfigMapName, ConfigMapNamespace string
	GARPCount                         int
	GARPInterval                      time.Duration
	Workers                           int
	QPS                               float32
	Burst                             int
	// kube-vip's lease timings: they time the control-plane Lease; Service
	// failover follows node heartbeats instead. In BGP mode LeaderElection
	// says whether only the Lease holder advertises the control-plane VIP.
	LeaderElection, ServiceElection           bool
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// CP is the control-plane part (controlplane.go).
	CP ControlPlaneConfig
	// Peering is the BGP mode's part (bgp.go).
	Peering BGPConfig
	// UPnP is the UPnP part (upnp.go).
	UPnP UPnPConfig
	// Liveness is how ARP mode finds dead nodes (liveness.go).
	Liveness LivenessConfig
	// servicesSet records that --services (svc_enable) was given: without
	// it, --controlplane (cp_enable) alone means Services off, as kube-vip.
	servicesSet bool
	// ServicesNamespace limits the Services served (kube-vip's svc_namespace).
	ServicesNamespace string
	// HealthPort serves /healthz on a second port (kube-vip's health_check_port).
	HealthPort int
	// Credentials says where the API credentials come from
	// (credentials.go), chosen once by ResolveCredentials.
	Credentials CredentialSource
}

// Default is the configuration with nothing set.
func Default() Config {
	return Config{
		Namespace: "kube-system", Services: true,
		HeartbeatPeriod: 200 * time.Millisecond, HeartbeatTimeout: 800 * time.Millisecond,
		ProbeTimeout: probe.DefaultTimeout,
		Rebalance:    true, Settle: 10 * time.Second,
		MetricsAddress: ":2112", ConfigMapName: "kubevip", ConfigMapNamespace: "kube-system",
		GARPCount: 3, GARPInterval: 150 * time.Millisecond, Workers: agent.DefaultWorkers, QPS: 100, Burst: 200,
		ClassName:      "kube-vip.io/kube-vip-class",
		LeaderElection: true, ServiceElection: true, LeaseDuration: controlplane.DefaultLeaseDuration,
		RenewDeadline: controlplane.DefaultRenewDeadline, RetryPeriod: controlplane.DefaultRetryPeriod,
		CP:      defaultCPConfig(),
		Peering: defaultBGPConfig(),
		UPnP:    defaultUPnPConfig(),

		Liveness: defaultLivenessConfig(),
	}
}

// Parse reads args, then env for every flag args did not set; Validate
// still has to run. The Config stays bound to the flag set (ApplyStart). extra, when not nil, adds flags of the caller's
// (logging, --version) to the same flag set before parsing. Errors wrap
// ErrConfig.
func Parse(args []string, env Environment, extra func(*pflag.FlagSet)) (*Config, *pflag.FlagSet, error) {
	c := new(Config)
	*c = Default()
	fs := pflag.NewFlagSet("vip-agent", pflag.ContinueOnError)
	c.AddFlags(fs)
	if extra != nil {
		extra(fs)
	}
	if err := fs.Parse(args); err != nil {
		return c, fs, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if fs.NArg() > 0 {
		return c, fs, fmt.Errorf("%w: unexpected arguments %q", ErrConfig, fs.Args())
	}
	if err := ApplyEnv(fs, env); err != nil {
		return c, fs, err
	}
	return c, fs, nil
}

// AddFlags registers the agent's flags on fs, defaulting to c's values.
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Kubeconfig, "kubeconfig", c.Kubeconfig, "Kubeconfig file (env KUBECONFIG, k8s_config_file; default: in-cluster, else "+kubeadmKubeconfig+").")
	fs.StringVar(&c.Kubeconfig, "k8sConfigPath", c.Kubeconfig, "kube-vip's name of --kubeconfig.")
	fs.StringVar(&c.NodeName, "node-name", c.NodeName, "This node's name (env NODE_NAME, vip_nodename; default: host name).")
	fs.StringVar(&c.Namespace, "namespace", c.Namespace, "Namespace of the node heartbeat Leases (env cp_namespace).")
	fs.BoolVar(&c.ARP, "arp", c.ARP, "Announce Service addresses by ARP/NDP from one elected node (env vip_arp).")
	fs.BoolVar(&c.BGP, "bgp", c.BGP, "Announce Service addresses by BGP from every eligible node (env bgp_enable).")
	fs.Var(trackedBool{&c.Services, &c.servicesSet}, "services", "Serve LoadBalancer Services (env svc_enable; default true, false with --controlplane as kube-vip).")
	fs.Lookup("services").NoOptDefVal = "true"
	fs.BoolVar(&c.ControlPlane, "controlplane", c.ControlPlane, "Hold the control-plane VIP (env cp_enable).")
	fs.StringVar(&c.Interface, "interface", c.Interface, "Announcing interface (env vip_interface; default: the interface whose subnet covers the VIP).")
	fs.StringVar(&c.ServicesNamespace, "services-namespace", c.ServicesNamespace, "Serve only the Services of this namespace (env svc_namespace; default: every namespace).")
	fs.IntVar(&c.HealthPort, "health-check-port", c.HealthPort, "Also serve /healthz on this port, for a liveness probe there (env health_check_port; 0: off).")
	fs.StringVar(&c.ServicesInterface, "services-interface", c.ServicesInterface, "Interface for Service VIPs, overriding --interface (env vip_servicesinterface).")
	fs.StringSliceVar(&c.AllowedInterfaces, "allowed-interfaces", c.AllowedInterfaces, "Interfaces a Service may name with kube-vip.io/serviceInterface, comma-separated (env vip_allowed_interfaces), besides --interface, --services-interface and the pools ConfigMap's interface-* values; any other is refused with an InterfaceNotAllowed Warning.")
	fs.DurationVar(&c.HeartbeatPeriod, "heartbeat-period", c.HeartbeatPeriod, "How often this node renews its heartbeat Lease (one API write each).")
	fs.DurationVar(&c.HeartbeatTimeout, "heartbeat-timeout", c.HeartbeatTimeout, "How long a silent heartbeat means a dead node (failover time).")
	fs.DurationVar(&c.ProbeTimeout, "address-probe-timeout", c.ProbeTimeout, "ARP mode: before the first announcement of an address no vip node held, ask the link with an RFC 5227 ARP probe / DAD neighbour solicitation; the whole probe (socket, sends, listening) ends within this budget (0 = do not probe). Takeovers of an address a vip node announced (its Lease is marked vip.io/announced-at) do not probe.")
	fs.BoolVar(&c.Rebalance, "rebalance", c.Rebalance, "Give a Service back to its preferred node once that node has been alive for --settle-time.")
	fs.DurationVar(&c.Settle, "settle-time", c.Settle, "How long a returning node must be alive before Services move back to it.")
	fs.StringVar(&c.MetricsAddress, "metrics-address", c.MetricsAddress, "Address of the metrics and health server (env prometheus_server; empty: off). Without a host (\":2112\") it listens on this node's address only (--node-address); \"0.0.0.0:2112\" listens on every interface.")
	fs.StringVar(&c.NodeAddress, "node-address", c.NodeAddress, "This node's address (env NODE_IP; the DaemonSet passes status.hostIP): a --metrics-address without a host listens there (default: this host's address towards the API server).")
	fs.StringVar(&c.HealthAdvertise, "health-advertise-address", c.HealthAdvertise, "Address peers use to reach this agent's health server (default: this node's address towards the API server).")
	fs.StringVar(&c.StatePath, "state-file", c.StatePath, "File recording the addresses this agent bound (default /run/vip-agent/<node>.json).")
	fs.BoolVar(&c.ClassOnly, "lb-class-only", c.ClassOnly, "Serve only Services of --lb-class-name (env lb_class_only).")
	fs.StringVar(&c.ClassName, "lb-class-name", c.ClassName, "loadBalancerClass served besides unclassed Services (env lb_class_name).")
	fs.StringVar(&c.ConfigMapName, "config-map-name", c.ConfigMapName, "Pools ConfigMap, read for interface-<namespace> keys.")
	fs.StringVar(&c.ConfigMapNamespace, "config-map-namespace", c.ConfigMapNamespace, "Namespace of the pools ConfigMap.")
	fs.IntVar(&c.GARPCount, "garp-count", c.GARPCount, "Gratuitous ARP / NA rounds per announcement.")
	fs.DurationVar(&c.GARPInterval, "garp-interval", c.GARPInterval, "Pause between gratuitous ARP / NA rounds.")
	fs.IntVar(&c.Workers, "workers", c.Workers, "Parallel Service reconcilers.")
	fs.Float32Var(&c.QPS, "kube-api-qps", c.QPS, "Client rate limit towards the API server.")
	fs.IntVar(&c.Burst, "kube-api-burst", c.Burst, "Client burst towards the API server.")
	fs.BoolVar(&c.LeaderElection, "leader-election", c.LeaderElection, "kube-vip compatibility (env vip_leaderelection); vip always elects per Service.")
	fs.BoolVar(&c.ServiceElection, "service-election", c.ServiceElection, "kube-vip compatibility (env svc_election); vip always elects per Service.")
	fs.Var(SecondsOrDuration{&c.LeaseDuration}, "lease-duration", "Control-plane Lease duration: whole seconds as kube-vip, or a duration (env vip_leaseduration). Service failover follows --heartbeat-timeout.")
	fs.Var(SecondsOrDuration{&c.RenewDeadline}, "lease-renew-deadline", "Control-plane Lease renew deadline (env vip_renewdeadline).")
	fs.Var(SecondsOrDuration{&c.RetryPeriod}, "lease-retry-period", "Control-plane Lease renewal period (env vip_retryperiod).")
	c.CP.addFlags(fs)
	c.Peering.addFlags(fs)
	c.UPnP.addFlags(fs)
	c.Liveness.addFlags(fs)
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

// Environment is where the kube-vip-style settings are read from: the
// process's own at start, a manifest container's in the generator's check.
// Every check of the environment goes through it, never through os directly.
type Environment struct {
	Lookup func(string) (string, bool)
	Names  func() []string // every variable set, for checks that refuse unknown names
}

// ProcessEnv is the agent's own environment.
func ProcessEnv() Environment {
	return Environment{Lookup: os.LookupEnv, Names: func() []string {
		out := []string{}
		for _, kv := range os.Environ() {
			name, _, _ := strings.Cut(kv, "=")
			out = append(out, name)
		}
		return out
	}}
}

// MapEnv is an environment given as name/value pairs.
func MapEnv(m map[string]string) Environment {
	return Environment{
		Lookup: func(k string) (string, bool) { v, ok := m[k]; return v, ok },
		Names:  func() []string { return slices.Sorted(maps.Keys(m)) },
	}
}

// ApplyEnv sets every flag not given on the command line from e, and
// refuses what e sets that vip does not provide.
func ApplyEnv(fs *pflag.FlagSet, e Environment) error {
	env := e.Lookup
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
			return fmt.Errorf("%w: environment %s=%q: %v", ErrConfig, name, v, err)
		}
		fl.Changed = true
	}
	for _, in := range compat.Of(compat.Env) {
		v, ok := env(in.Name)
		if !ok || in.Status != compat.Refused || in.HarmlessValue(v) {
			continue
		}
		return fmt.Errorf("%w: environment %s=%q is not supported: %s", ErrConfig, in.Name, v, in.Note)
	}
	if fl := fs.Lookup("bgp"); fl != nil && fl.Value.String() == "true" {
		return CheckBGPEnv(e)
	}
	return nil
}

// AcceptedEnv lists the kube-vip variables set in env that vip accepts
// without effect (its design already does what they ask), for one log line.
func AcceptedEnv(env func(string) (string, bool)) []string {
	var out []string
	for _, in := range compat.Of(compat.Env) {
		if _, ok := env(in.Name); ok && in.Status == compat.Accepted {
			out = append(out, in.Name)
		}
	}
	return out
}

// Validate checks the combination and fills derived defaults (the node
// name from the host name, the state file from the node name).
func (c *Config) Validate() error {
	if c.ARP && c.BGP {
		return fmt.Errorf("%w: --arp (vip_arp) and --bgp (bgp_enable) both set: choose one advertisement mode", ErrConfig)
	}
	if !c.ARP && !c.BGP {
		return fmt.Errorf("%w: no advertisement mode: set --arp (vip_arp=true) or --bgp (bgp_enable=true)", ErrConfig)
	}
	if c.BGP {
		if err := c.Peering.Validate(); err != nil {
			return err
		}
	}
	if c.ControlPlane {
		if err := c.CP.validate(c); err != nil {
			return err
		}
	}
	if err := c.Liveness.validate(); err != nil {
		return err
	}
	if err := c.UPnP.validate(c); err != nil {
		return err
	}
	// kube-vip's interface value "auto" is vip's default: the interface
	// whose subnet covers each address.
	if strings.EqualFold(c.Interface, "auto") {
		c.Interface = ""
	}
	if strings.EqualFold(c.ServicesInterface, "auto") {
		c.ServicesInterface = ""
	}
	if c.HealthPort < 0 || c.HealthPort > 65535 {
		return fmt.Errorf("%w: --health-check-port (health_check_port) %d is not a TCP port", ErrConfig, c.HealthPort)
	}
	if c.ControlPlane && !c.servicesSet {
		c.Services = false // kube-vip's default: svc_enable is false unless set
	}
	if !c.Services && !c.ControlPlane {
		return fmt.Errorf("%w: --services=false (svc_enable=false) without --controlplane (cp_enable) leaves nothing to do", ErrConfig)
	}
	if c.ARP && c.Services && c.MetricsAddress == "" {
		return fmt.Errorf("%w: --metrics-address (prometheus_server) must not be empty in ARP mode: peers probe this agent's health there before deciding it is cut off", ErrConfig)
	}
	if c.NodeAddress != "" {
		if _, err := netip.ParseAddr(c.NodeAddress); err != nil {
			return fmt.Errorf("%w: --node-address (NODE_IP) %q is not an IP address", ErrConfig, c.NodeAddress)
		}
	}
	if c.HeartbeatPeriod <= 0 || c.HeartbeatTimeout < 2*c.HeartbeatPeriod {
		return fmt.Errorf("%w: --heartbeat-timeout (%v) must be at least twice --heartbeat-period (%v)", ErrConfig, c.HeartbeatTimeout, c.HeartbeatPeriod)
	}
	if err := controlplane.CheckLeaseTimings(c.LeaseDuration, c.RenewDeadline, c.RetryPeriod); err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if c.GARPCount < 1 || c.GARPInterval < 0 || c.Workers < 1 {
		return fmt.Errorf("%w: --garp-count and --workers must be positive", ErrConfig)
	}
	if c.ClassOnly && c.ClassName == "" {
		return fmt.Errorf("%w: --lb-class-only needs --lb-class-name", ErrConfig)
	}
	if c.NodeName == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return fmt.Errorf("%w: no node name: set --node-name or NODE_NAME", ErrConfig)
		}
		c.NodeName = strings.ToLower(h)
	}
	if c.StatePath == "" {
		c.StatePath = "/run/vip-agent/" + c.NodeName + ".json"
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

// CheckContainer runs the agent's checks on the arguments and environment
// a manifest gives its container, as if the agent started on a node named
// nodeName with them. Errors wrap ErrConfig.
func CheckContainer(args []string, env map[string]string, nodeName string) error {
	args, start := KubeVipCommand(args)
	c, fs, err := Parse(args, MapEnv(env), nil)
	if err != nil {
		return err
	}
	if _, err := ApplyStart(fs, start); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	c.NodeName = nodeName
	return c.Validate()
}
