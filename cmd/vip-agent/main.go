// Command vip-agent advertises the addresses of LoadBalancer Services from
// the nodes of a bare-metal cluster, and the control-plane VIP.
//
// It reads its configuration (pkg/agentconfig: flags and kube-vip's
// environment variables) and runs the agent (internal/agentapp); `vip-agent
// manifest` prints install manifests (pkg/manifest).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
	logsapi "k8s.io/component-base/logs/api/v1"
	_ "k8s.io/component-base/logs/json/register"
	"k8s.io/klog/v2"

	"github.com/vip-lb/vip/internal/agentapp"
	"github.com/vip-lb/vip/internal/version"
	"github.com/vip-lb/vip/pkg/agentconfig"
	"github.com/vip-lb/vip/pkg/manifest"
)

func main() {
	if err := run(os.Args[1:], agentconfig.ProcessEnv(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "vip-agent:", err)
		if errors.Is(err, agentconfig.ErrConfig) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func run(args []string, env agentconfig.Environment, stdout io.Writer) error {
	if len(args) > 0 && args[0] == "manifest" {
		return manifest.Command(args[1:], stdout)
	}
	args, start := agentconfig.KubeVipCommand(args)
	logCfg := logsapi.NewLoggingConfiguration()
	var showVersion *bool
	cfg, fs, err := agentconfig.Parse(args, env, func(fs *pflag.FlagSet) {
		logsapi.AddFlags(logCfg, fs)
		showVersion = fs.Bool("version", false, "Print the version and exit.")
	})
	if showVersion != nil && *showVersion {
		fmt.Fprintln(stdout, "vip-agent", version.Version)
		return nil
	}
	if err != nil {
		return err
	}
	startCP, err := agentconfig.ApplyStart(fs, start)
	if err != nil {
		return fmt.Errorf("%w: %w", agentconfig.ErrConfig, err)
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := logsapi.ValidateAndApply(logCfg, nil); err != nil {
		return fmt.Errorf("%w: logging: %w", agentconfig.ErrConfig, err)
	}
	log := klog.Background().WithName("vip-agent")
	if err := cfg.ResolveCredentials(agentconfig.OSHostFiles(), log); err != nil {
		return err
	}
	if acc := agentconfig.AcceptedEnv(env.Lookup); len(acc) > 0 {
		log.Info("kube-vip settings accepted without effect: vip already works that way (docs/migration.md)", "settings", acc)
	}
	if startCP {
		log.Info("kube-vip's start command: the control-plane VIP is on (cp_enable not set)")
	}
	if cfg.ServicesNamespace != "" {
		log.Info("serving the Services of one namespace only (svc_namespace)", "namespace", cfg.ServicesNamespace)
	}
	if cfg.ControlPlane && !cfg.Services {
		log.Info("control plane only: LoadBalancer Services are not served (cp_enable without svc_enable, kube-vip's default); set svc_enable=true (--services) to serve them")
	}
	if def := agentconfig.Default(); !cfg.ControlPlane && (cfg.LeaseDuration != def.LeaseDuration ||
		cfg.RenewDeadline != def.RenewDeadline || cfg.RetryPeriod != def.RetryPeriod) {
		log.Info("kube-vip lease timings accepted but unused: they time the control-plane Lease, and vip detects dead nodes by heartbeat",
			"heartbeatPeriod", cfg.HeartbeatPeriod, "heartbeatTimeout", cfg.HeartbeatTimeout)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return agentapp.Run(ctx, *cfg, log)
}
