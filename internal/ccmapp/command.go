// Package ccmapp composes vip-ccm from the cloud-provider library's parts:
// the cloud-controller-manager's options, client, metrics registry, leader
// election and secure HTTP server with /healthz and /metrics (put together
// in run as the library's app.Run does, plus /readyz with one meaning, see
// readiness), vip's provider (pkg/ccm), vip's flags and
// kube-vip-cloud-provider's environment variables (Config), presets for the
// library's flags, and the controllers vip runs: vip's own service
// controller (pkg/ccm.ServiceController, the one writer of Service status,
// in place of the library's stock one) and the library's cloud-node
// controller.
package ccmapp

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/cloud-provider/app"
	"k8s.io/cloud-provider/app/config"
	"k8s.io/cloud-provider/names"
	"k8s.io/cloud-provider/options"
	"k8s.io/component-base/cli"
	cliflag "k8s.io/component-base/cli/flag"
	"k8s.io/component-base/cli/globalflag"
	"k8s.io/component-base/logs"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/component-base/term"
	"k8s.io/component-base/version/verflag"
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

// NewCommand builds vip-ccm's command: the cloud-controller-manager's
// flags (as app.NewCloudControllerManagerCommand declares them), vip's
// flags and presets, running run (the library's Run plus /readyz).
func NewCommand(vf *Config) (*cobra.Command, error) {
	s, err := options.NewCloudControllerManagerOptions()
	if err != nil {
		return nil, fmt.Errorf("initialising command options: %w", err)
	}
	logOptions := logs.NewOptions()
	ctors := controllers(vf)
	aliases := names.CCMControllerAliases()
	cmd := &cobra.Command{
		Use: "vip-ccm",
		Long: `vip-ccm is vip's cloud-controller-manager: it gives LoadBalancer Services
addresses from the pools ConfigMap and initialises nodes.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			verflag.PrintAndExitIfRequested()
			if err := logsapi.ValidateAndApply(logOptions, utilfeature.DefaultFeatureGate); err != nil {
				return fmt.Errorf("logging options: %w", err)
			}
			cliflag.PrintFlags(cmd.Flags())
			c, err := s.Config(app.ControllerNames(ctors), app.ControllersDisabledByDefault.List(), aliases, app.AllWebhooks, app.DisabledByDefaultWebhooks)
			if err != nil {
				return fmt.Errorf("configuration: %w", err)
			}
			cc := c.Complete()
			cloud, err := initCloud(cc, vf)
			if err != nil {
				return err
			}
			return run(cmd.Context(), cc, cloud, app.ConstructControllerInitializers(ctors, cc, cloud))
		},
		Args: cobra.NoArgs,
	}
	fss := s.Flags(app.ControllerNames(ctors), app.ControllersDisabledByDefault.List(), aliases, app.AllWebhooks, app.DisabledByDefaultWebhooks)
	global := fss.FlagSet("global")
	verflag.AddFlags(global)
	logsapi.AddFlags(logOptions, global)
	globalflag.AddGlobalFlags(global, cmd.Name(), logs.SkipLoggingConfigurationFlags())
	vf.AddFlags(fss.FlagSet("vip"))
	for _, f := range fss.FlagSets {
		cmd.Flags().AddFlagSet(f)
	}
	cols, _, _ := term.TerminalSize(cmd.OutOrStdout())
	cmd.SetUsageFunc(func(cmd *cobra.Command) error {
		fmt.Fprintf(cmd.OutOrStderr(), "Usage:\n  %s\n", cmd.UseLine())
		cliflag.PrintSections(cmd.OutOrStderr(), fss, cols)
		return nil
	})
	cmd.SetHelpFunc(func(cmd *cobra.Command, _ []string) {
		fmt.Fprintf(cmd.OutOrStdout(), "%s\n\nUsage:\n  %s\n", cmd.Long, cmd.UseLine())
		cliflag.PrintSections(cmd.OutOrStdout(), fss, cols)
	})

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

// initCloud checks the provider's configuration and builds vip's provider.
func initCloud(c *config.CompletedConfig, vf *Config) (*ccm.Cloud, error) {
	if name := c.ComponentConfig.KubeCloudShared.CloudProvider.Name; name != ccm.ProviderName {
		return nil, fmt.Errorf("--cloud-provider=%q: vip-ccm only provides %q", name, ccm.ProviderName)
	}
	if err := ccm.ReadConfigFile(c.ComponentConfig.KubeCloudShared.CloudProvider.CloudConfigFile); err != nil {
		return nil, err
	}
	klog.InfoS("vip-ccm", "version", version.Version)
	if err := reconnectFast(c); err != nil {
		return nil, fmt.Errorf("building the informers' client: %w", err)
	}
	o, err := vf.Complete()
	if err != nil {
		return nil, fmt.Errorf("invalid vip options: %w", err)
	}
	return ccm.New(o, legacyregistry.Registerer())
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
