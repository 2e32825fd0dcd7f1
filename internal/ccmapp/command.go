// Package ccmapp composes vip-ccm: the cloud-provider library's
// cloud-controller-manager command (its client, metrics registry, leader
// election and secure HTTP server with /healthz and /metrics) with vip's
// provider (pkg/ccm), vip's flags and kube-vip-cloud-provider's environment
// variables (Config), presets for the library's flags, and the controllers
// vip runs: vip's own service controller (pkg/ccm.ServiceController, the
// one writer of Service status, in place of the library's stock one) and
// the library's cloud-node controller.
package ccmapp

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/util/wait"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/cloud-provider/app"
	"k8s.io/cloud-provider/app/config"
	"k8s.io/cloud-provider/names"
	"k8s.io/cloud-provider/options"
	"k8s.io/component-base/cli"
	cliflag "k8s.io/component-base/cli/flag"
	"k8s.io/component-base/metrics/legacyregistry"
	genericcontrollermanager "k8s.io/controller-manager/app"
	"k8s.io/controller-manager/controller"
	"k8s.io/klog/v2"

	"github.com/vip-lb/vip/internal/version"
	"github.com/vip-lb/vip/pkg/ccm"
)

// presets are the cloud-controller-manager flags vip sets for the user; any
// of them may still be given on the command line.
//
// The client limits apply per client (the service controller, its Events,
// the cloud-node controller and vip's provider each have one). A Service
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

// Run runs vip-ccm with the command line of the process and returns its
// exit status.
func Run(vf *Config) int {
	cmd, err := NewCommand(vf)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vip-ccm:", err)
		return 2
	}
	return cli.Run(cmd)
}

// NewCommand builds the cloud-controller-manager command with vip's
// provider, controllers, flags and presets.
func NewCommand(vf *Config) (*cobra.Command, error) {
	ccmOptions, err := options.NewCloudControllerManagerOptions()
	if err != nil {
		return nil, fmt.Errorf("initialising command options: %w", err)
	}
	fss := cliflag.NamedFlagSets{}
	vf.AddFlags(fss.FlagSet("vip"))

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
		o, err := vf.Complete()
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

// controllers runs vip's service controller, under the stock one's name
// (so --controllers=*,-service and the like keep their meaning), and the
// cloud-node controller. The node lifecycle and route controllers have
// nothing to do on bare metal.
func controllers(vf *Config) map[string]app.ControllerInitFuncConstructor {
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
	return out
}

// startServiceController runs vip's service controller. Its Events go
// through a client of their own (so they never hold up status writes under
// the client rate limit) and the purely informational ones are left out
// unless allEvents.
func startServiceController(ctx context.Context, ic app.ControllerInitContext, cctx genericcontrollermanager.ControllerContext,
	cc *config.CompletedConfig, cp cloudprovider.Interface, allEvents bool) (controller.Interface, bool, error) {
	c, ok := cp.(*ccm.Cloud)
	if !ok {
		return nil, false, fmt.Errorf("the service controller needs vip's provider, got %T", cp)
	}
	rec := ccm.NewServiceEventRecorder(ctx, cc.ClientBuilder.ClientOrDie(ic.ClientName+"-events"))
	sc := ccm.NewServiceController(c.Allocator(), cc.ClientBuilder.ClientOrDie(ic.ClientName), cc.SharedInformers.Core().V1().Services(), rec, allEvents)
	if m := cctx.ControllerManagerMetrics; m != nil {
		m.ControllerStarted("service")
		go func() {
			<-ctx.Done()
			m.ControllerStopped("service")
		}()
	}
	go sc.Run(ctx, int(cc.ComponentConfig.ServiceController.ConcurrentServiceSyncs))
	return nil, true, nil
}
