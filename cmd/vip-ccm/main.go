// Command vip-ccm is vip's cloud-controller-manager: it gives LoadBalancer
// Services addresses from the pools ConfigMap and initialises nodes whose
// kubelet runs with --cloud-provider=external.
package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/util/wait"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/cloud-provider/app"
	"k8s.io/cloud-provider/app/config"
	servicecontroller "k8s.io/cloud-provider/controllers/service"
	"k8s.io/cloud-provider/names"
	"k8s.io/cloud-provider/options"
	"k8s.io/component-base/cli"
	cliflag "k8s.io/component-base/cli/flag"
	_ "k8s.io/component-base/logs/json/register"
	"k8s.io/component-base/metrics/legacyregistry"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	genericcontrollermanager "k8s.io/controller-manager/app"
	"k8s.io/controller-manager/controller"
	"k8s.io/klog/v2"

	"github.com/vip-lb/vip/internal/version"
	"github.com/vip-lb/vip/pkg/ccm"
	"github.com/vip-lb/vip/pkg/lbsvc"
)

// classControllerName is vip's own controller for classed Services.
const classControllerName = "vip-class-service"

// presets are the cloud-controller-manager flags vip sets for the user; any
// of them may still be given on the command line.
//
// The client limits apply per client (the service controller, its Events,
// the cloud-node controller and vip's own client each have one). A Service
// costs the service controller two writes (finalizer, status), so at 500
// QPS a burst of 1000 new Services is not held up on the client side; the
// API server's priority and fairness still protects the server.
var presets = map[string]string{
	"cloud-provider":               ccm.ProviderName,
	"leader-elect-resource-name":   "vip-ccm",
	"authentication-skip-lookup":   "true",
	"kube-api-qps":                 "500",
	"kube-api-burst":               "1000",
	"concurrent-service-syncs":     "10",
	"node-status-update-frequency": "1m",
}

type vipFlags struct {
	opts             ccm.Options
	cp               []string
	allServiceEvents bool
}

func (f *vipFlags) addTo(fs *pflag.FlagSet) {
	fs.StringVar(&f.opts.ConfigMapName, "config-map-name", f.opts.ConfigMapName, "Name of the pools ConfigMap (env KUBEVIP_CONFIG_MAP).")
	fs.StringVar(&f.opts.ConfigMapNamespace, "config-map-namespace", f.opts.ConfigMapNamespace, "Namespace of the pools ConfigMap (env KUBEVIP_NAMESPACE).")
	fs.StringVar(&f.opts.Class.Name, "load-balancer-class", f.opts.Class.Name, "Also serve Services with this spec.loadBalancerClass (env KUBEVIP_CUSTOM_LOADBALANCERCLASS_NAME).")
	fs.BoolVar(&f.opts.Class.Only, "load-balancer-class-only", f.opts.Class.Only, "Serve only Services with --load-balancer-class, none without a class (env KUBEVIP_ENABLE_LOADBALANCERCLASS).")
	fs.StringSliceVar(&f.cp, "control-plane-address", f.cp, "Control-plane VIPs that must never be handed to a Service.")
	fs.StringVar(&f.opts.AgentNamespace, "agent-namespace", f.opts.AgentNamespace, "Namespace of vip-agent's Leases (heartbeats, control-plane lock, conflict and DHCP records); vip-ccm reads Leases there only.")
	fs.DurationVar(&f.opts.ConflictQuarantine, "conflict-quarantine", f.opts.ConflictQuarantine, "How long an address another host answered for (a vip-conflict-<addr> record) is refused and kept out of status.")
	fs.DurationVar(&f.opts.RetryAfter, "retry-after", f.opts.RetryAfter, "Fixed retry delay for Services that cannot get an address yet.")
	fs.BoolVar(&f.allServiceEvents, "all-service-events", f.allServiceEvents, "Also record the service controller's EnsuringLoadBalancer, EnsuredLoadBalancer and UpdatedLoadBalancer Events (vip records AddressAllocated instead).")
}

// fromEnv applies kube-vip-cloud-provider's environment variables.
func (f *vipFlags) fromEnv() error {
	if v := os.Getenv("KUBEVIP_NAMESPACE"); v != "" {
		f.opts.ConfigMapNamespace = v
	}
	if v := os.Getenv("KUBEVIP_CONFIG_MAP"); v != "" {
		f.opts.ConfigMapName = v
	}
	if v := os.Getenv("KUBEVIP_ENABLE_LOADBALANCERCLASS"); v != "" {
		on, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("KUBEVIP_ENABLE_LOADBALANCERCLASS=%q: %w", v, err)
		}
		f.opts.Class.Only = on
		if on && f.opts.Class.Name == "" {
			f.opts.Class.Name = lbsvc.DefaultLoadBalancerClass
		}
	}
	if v := os.Getenv("KUBEVIP_CUSTOM_LOADBALANCERCLASS_NAME"); v != "" {
		f.opts.Class.Name = v
	}
	return nil
}

func (f *vipFlags) complete() (ccm.Options, error) {
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

func main() {
	// The command's own --version prints the Kubernetes libraries' version;
	// vip-ccm reports its own release.
	for _, a := range os.Args[1:] {
		if a == "--version" || a == "--version=true" {
			fmt.Println("vip-ccm", version.Version)
			return
		}
	}
	vf := &vipFlags{opts: ccm.DefaultOptions()}
	if err := vf.fromEnv(); err != nil {
		fmt.Fprintln(os.Stderr, "vip-ccm:", err)
		os.Exit(2)
	}
	cmd, err := newCommand(vf)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vip-ccm:", err)
		os.Exit(2)
	}
	os.Exit(cli.Run(cmd))
}

// newCommand builds the cloud-controller-manager command with vip's
// provider, controllers, flags and presets.
func newCommand(vf *vipFlags) (*cobra.Command, error) {
	ccmOptions, err := options.NewCloudControllerManagerOptions()
	if err != nil {
		return nil, fmt.Errorf("initialising command options: %w", err)
	}
	fss := cliflag.NamedFlagSets{}
	vf.addTo(fss.FlagSet("vip"))

	var cloud *ccm.Cloud
	initCloud := func(c *config.CompletedConfig) cloudprovider.Interface {
		if name := c.ComponentConfig.KubeCloudShared.CloudProvider.Name; name != ccm.ProviderName {
			klog.Fatalf("--cloud-provider=%q: vip-ccm only provides %q", name, ccm.ProviderName)
		}
		if err := ccm.ReadConfigFile(c.ComponentConfig.KubeCloudShared.CloudProvider.CloudConfigFile); err != nil {
			klog.Fatalf("%v", err)
		}
		klog.InfoS("vip-ccm", "version", version.Version)
		if err := reconnectFast(c); err != nil {
			klog.Fatalf("building the informers' client: %v", err)
		}
		o, err := vf.complete()
		if err != nil {
			klog.Fatalf("invalid vip options: %v", err)
		}
		cloud, err = ccm.New(o, legacyregistry.Registerer())
		if err != nil {
			klog.Fatalf("%v", err)
		}
		return cloud
	}

	cmd := app.NewCloudControllerManagerCommand(ccmOptions, initCloud, controllers(vf), names.CCMControllerAliases(), fss, wait.NeverStop)
	cmd.Use = "vip-ccm"
	var perr error
	cmd.Flags().VisitAll(func(fl *pflag.Flag) {
		if v, ok := presets[fl.Name]; ok {
			if err := fl.Value.Set(v); err != nil && perr == nil {
				perr = fmt.Errorf("presetting --%s: %w", fl.Name, err)
			}
			fl.DefValue = v
		}
	})
	return cmd, perr
}

// controllers runs the service controller, the cloud-node controller and,
// when a loadBalancerClass is configured, vip's class controller. The node
// lifecycle and route controllers have nothing to do on bare metal.
func controllers(vf *vipFlags) map[string]app.ControllerInitFuncConstructor {
	out := map[string]app.ControllerInitFuncConstructor{}
	c := app.DefaultInitFuncConstructors[names.CloudNodeController]
	c.InitContext.ClientName = "vip-ccm"
	out[names.CloudNodeController] = c
	out[names.ServiceLBController] = app.ControllerInitFuncConstructor{
		InitContext: app.ControllerInitContext{ClientName: "vip-ccm"},
		Constructor: func(ic app.ControllerInitContext, cc *config.CompletedConfig, cp cloudprovider.Interface) app.InitFunc {
			return func(ctx context.Context, cctx genericcontrollermanager.ControllerContext) (controller.Interface, bool, error) {
				return startServiceController(ctx, ic, cctx, cc, cp, vf.allServiceEvents)
			}
		},
	}
	out[classControllerName] = app.ControllerInitFuncConstructor{
		InitContext: app.ControllerInitContext{ClientName: "vip-ccm"},
		Constructor: func(ic app.ControllerInitContext, cc *config.CompletedConfig, cp cloudprovider.Interface) app.InitFunc {
			return func(ctx context.Context, cctx genericcontrollermanager.ControllerContext) (controller.Interface, bool, error) {
				c, ok := cp.(*ccm.Cloud)
				if !ok || vf.opts.Class.Name == "" {
					return nil, false, nil
				}
				cls := ccm.NewClassController(vf.opts.Class.Name, c.Allocator(), cc.ClientBuilder.ClientOrDie(ic.ClientName), cc.SharedInformers.Core().V1().Services())
				go cls.Run(ctx, int(cc.ComponentConfig.ServiceController.ConcurrentServiceSyncs))
				return nil, true, nil
			}
		},
	}
	return out
}

// startServiceController runs the stock service controller, as the
// cloud-provider library does, except that its Events go through a client
// of their own (so they never hold up status writes under the client rate
// limit) and the purely informational ones are left out unless allEvents.
func startServiceController(ctx context.Context, ic app.ControllerInitContext, cctx genericcontrollermanager.ControllerContext,
	cc *config.CompletedConfig, cp cloudprovider.Interface, allEvents bool) (controller.Interface, bool, error) {
	client := ccm.ServiceControllerClient(
		cc.ClientBuilder.ClientOrDie(ic.ClientName),
		cc.ClientBuilder.ClientOrDie(ic.ClientName+"-events"),
		allEvents)
	sc, err := servicecontroller.New(cp, client,
		cc.SharedInformers.Core().V1().Services(), cc.SharedInformers.Core().V1().Nodes(),
		cc.ComponentConfig.KubeCloudShared.ClusterName, utilfeature.DefaultFeatureGate)
	if err != nil {
		klog.Errorf("Failed to start service controller: %v", err)
		return nil, false, nil
	}
	go sc.Run(ctx, int(cc.ComponentConfig.ServiceController.ConcurrentServiceSyncs), cctx.ControllerManagerMetrics)
	return nil, true, nil
}
