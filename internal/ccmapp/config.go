package ccmapp

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/vip-lb/vip/pkg/ccm"
	"github.com/vip-lb/vip/pkg/lbsvc"
)

// NewConfig is the configuration with nothing set.
func NewConfig() *Config { return &Config{opts: ccm.DefaultOptions()} }

// Config is vip-ccm's own configuration: its flags and
// kube-vip-cloud-provider's environment variables. The cloud-provider
// library's flags are the command's (NewCommand).
type Config struct {
	opts             ccm.Options
	cp               []string
	allServiceEvents bool
}

func (f *Config) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&f.opts.ConfigMapName, "config-map-name", f.opts.ConfigMapName, "Name of the pools ConfigMap (env KUBEVIP_CONFIG_MAP).")
	fs.StringVar(&f.opts.ConfigMapNamespace, "config-map-namespace", f.opts.ConfigMapNamespace, "Namespace of the pools ConfigMap (env KUBEVIP_NAMESPACE).")
	fs.StringVar(&f.opts.Class.Name, "load-balancer-class", f.opts.Class.Name, "Also serve Services with this spec.loadBalancerClass (env KUBEVIP_CUSTOM_LOADBALANCERCLASS_NAME).")
	fs.BoolVar(&f.opts.Class.Only, "load-balancer-class-only", f.opts.Class.Only, "Serve only Services with --load-balancer-class, none without a class (env KUBEVIP_ENABLE_LOADBALANCERCLASS).")
	fs.StringSliceVar(&f.cp, "control-plane-address", f.cp, "Control-plane VIPs that must never be handed to a Service.")
	fs.StringVar(&f.opts.AgentNamespace, "agent-namespace", f.opts.AgentNamespace, "Namespace of vip-agent's Leases (heartbeats, control-plane lock, conflict and DHCP records); vip-ccm reads Leases there only.")
	fs.DurationVar(&f.opts.ConflictQuarantine, "conflict-quarantine", f.opts.ConflictQuarantine, "How long an address another host answered for (a vip-conflict-<addr> record) is refused and kept out of status.")
	fs.DurationVar(&f.opts.RetryAfter, "retry-after", f.opts.RetryAfter, "Fixed retry delay for Services that cannot get an address yet.")
	fs.BoolVar(&f.allServiceEvents, "all-service-events", f.allServiceEvents, "Also record the service controller's EnsuringLoadBalancer and EnsuredLoadBalancer Events (vip records AddressAllocated instead).")
}

// FromEnv applies kube-vip-cloud-provider's environment variables, read
// with lookup (os.LookupEnv).
func (f *Config) FromEnv(lookup func(string) (string, bool)) error {
	getenv := func(k string) string { v, _ := lookup(k); return v }
	if v := getenv("KUBEVIP_NAMESPACE"); v != "" {
		f.opts.ConfigMapNamespace = v
	}
	if v := getenv("KUBEVIP_CONFIG_MAP"); v != "" {
		f.opts.ConfigMapName = v
	}
	if v := getenv("KUBEVIP_ENABLE_LOADBALANCERCLASS"); v != "" {
		on, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("KUBEVIP_ENABLE_LOADBALANCERCLASS=%q: %w", v, err)
		}
		f.opts.Class.Only = on
		if on && f.opts.Class.Name == "" {
			f.opts.Class.Name = lbsvc.DefaultLoadBalancerClass
		}
	}
	if v := getenv("KUBEVIP_CUSTOM_LOADBALANCERCLASS_NAME"); v != "" {
		f.opts.Class.Name = v
	}
	return nil
}

// Complete checks the configuration and returns the provider's options.
func (f *Config) Complete() (ccm.Options, error) {
	o := f.opts
	o.ControlPlaneVIPs = nil
	for _, s := range f.cp {
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p == "" {
				continue
			}
			a, err := netip.ParseAddr(p)
			if err != nil {
				return o, fmt.Errorf("--control-plane-address %q: %w", p, err)
			}
			o.ControlPlaneVIPs = append(o.ControlPlaneVIPs, a.Unmap())
		}
	}
	return o, o.Validate()
}
