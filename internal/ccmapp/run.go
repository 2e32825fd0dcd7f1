package ccmapp

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"time"

	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/server/healthz"
	v1core "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/cloud-provider/app"
	"k8s.io/cloud-provider/app/config"
	configv1alpha "k8s.io/cloud-provider/config/v1alpha1"
	"k8s.io/component-base/configz"
	"k8s.io/component-base/metrics/prometheus/slis"
	genericcontrollermanager "k8s.io/controller-manager/app"
	"k8s.io/controller-manager/controller"
	"k8s.io/controller-manager/pkg/clientbuilder"
	controllerhealthz "k8s.io/controller-manager/pkg/healthz"
	"k8s.io/controller-manager/pkg/leadermigration"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

// errLeaderMigration: vip-ccm has no in-tree predecessor to migrate from.
var errLeaderMigration = errors.New("leader migration is not supported: vip-ccm replaces no in-tree cloud provider")

// run is the library's app.Run (Events, /configz, the secure server with
// /healthz and /metrics, leader election, the controllers) built from the
// library's own parts, plus /readyz (readiness) on the same server. The
// library's Run offers no way to add /readyz; webhooks and leader
// migration, which vip does not use, are left out.
func run(ctx context.Context, c *config.CompletedConfig, cloud cloudprovider.Interface, inits map[string]app.InitFunc) error {
	c.EventBroadcaster.StartStructuredLogging(0)
	c.EventBroadcaster.StartRecordingToSink(&v1core.EventSinkImpl{Interface: c.Client.CoreV1().Events("")})
	defer c.EventBroadcaster.Shutdown()

	gen := &c.ComponentConfig.Generic
	if leadermigration.Enabled(gen) {
		return errLeaderMigration
	}
	if err := installConfigz(c); err != nil {
		return err
	}

	var lease time.Duration
	var checks []healthz.HealthChecker
	var electionChecker *leaderelection.HealthzAdaptor
	if gen.LeaderElection.LeaderElect {
		lease = gen.LeaderElection.LeaseDuration.Duration
		electionChecker = leaderelection.NewLeaderHealthzAdaptor(20 * time.Second)
		checks = append(checks, electionChecker)
	}
	id, err := os.Hostname()
	if err != nil {
		return fmt.Errorf("leader identity: %w", err)
	}
	// Two processes on one host must not both lead.
	id += "_" + string(uuid.NewUUID())
	ready := newReadiness(clock.RealClock{}, lease, id)

	healthzHandler := controllerhealthz.NewMutableHealthzHandler(checks...)
	if c.SecureServing != nil {
		mux := genericcontrollermanager.NewBaseHandler(&gen.Debugging, healthzHandler)
		slis.SLIMetricsWithReset{}.Install(mux)
		healthz.InstallReadyzHandler(mux, ready.checks()...)
		handler := genericcontrollermanager.BuildHandlerChain(mux, &c.Authorization, &c.Authentication)
		if _, _, err := c.SecureServing.Serve(handler, 0, ctx.Done()); err != nil {
			return fmt.Errorf("serving: %w", err)
		}
	}

	start := func(ctx context.Context) {
		cctx, err := app.CreateControllerContext(c, clientbuilder.SimpleControllerClientBuilder{ClientConfig: c.Kubeconfig}, ctx.Done())
		if err != nil {
			klog.Fatalf("building the controller context: %v", err)
		}
		if err := startControllers(ctx, cloud, cctx, c, inits, healthzHandler, ready); err != nil {
			klog.Fatalf("running the controllers: %v", err)
		}
	}
	if !gen.LeaderElection.LeaderElect {
		start(ctx)
		return nil
	}

	rl, err := resourcelock.NewFromKubeconfig(gen.LeaderElection.ResourceLock, gen.LeaderElection.ResourceNamespace, gen.LeaderElection.ResourceName,
		resourcelock.ResourceLockConfig{Identity: id, EventRecorder: c.EventRecorder}, c.Kubeconfig, gen.LeaderElection.RenewDeadline.Duration)
	if err != nil {
		return fmt.Errorf("leader-election lock: %w", err)
	}
	leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
		Lock:          ready.lock(rl),
		LeaseDuration: gen.LeaderElection.LeaseDuration.Duration,
		RenewDeadline: gen.LeaderElection.RenewDeadline.Duration,
		RetryPeriod:   gen.LeaderElection.RetryPeriod.Duration,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: start,
			OnStoppedLeading: func() {
				klog.ErrorS(nil, "leaderelection lost")
				klog.FlushAndExit(klog.ExitFlushTimeout, 1)
			},
		},
		WatchDog: electionChecker,
		Name:     gen.LeaderElection.ResourceName,
	})
	return nil
}

// installConfigz serves the configuration at /configz, as the library does.
func installConfigz(c *config.CompletedConfig) error {
	ext := &configv1alpha.CloudControllerManagerConfiguration{}
	if err := configv1alpha.Convert_config_CloudControllerManagerConfiguration_To_v1alpha1_CloudControllerManagerConfiguration(&c.ComponentConfig, ext, nil); err != nil {
		return fmt.Errorf("converting the configuration for /configz: %w", err)
	}
	ext.SetGroupVersionKind(configv1alpha.SchemeGroupVersion.WithKind("CloudControllerManagerConfiguration"))
	cz, err := configz.New(app.ConfigzName)
	if err != nil {
		return fmt.Errorf("registering /configz: %w", err)
	}
	return cz.Set(ext)
}

// startControllers is the library's: it initialises the provider, starts
// the enabled controllers (one /healthz check each) and the informers, and
// then — vip's addition — waits for every informer to sync before /readyz
// says ready. It returns when ctx ends.
func startControllers(ctx context.Context, cloud cloudprovider.Interface, cctx genericcontrollermanager.ControllerContext, c *config.CompletedConfig,
	inits map[string]app.InitFunc, healthzHandler *controllerhealthz.MutableHealthzHandler, ready *readiness) error {
	cloud.Initialize(c.ClientBuilder, ctx.Done())
	if iu, ok := cloud.(cloudprovider.InformerUser); ok {
		iu.SetInformers(c.SharedInformers)
	}
	var checks []healthz.HealthChecker
	for name, initFn := range inits {
		if !genericcontrollermanager.IsControllerEnabled(name, app.ControllersDisabledByDefault, c.ComponentConfig.Generic.Controllers) {
			klog.Warningf("%q is disabled", name) // the library's log lines, kept
			continue
		}
		klog.V(1).Infof("Starting %q", name)
		ctrl, started, err := initFn(ctx, cctx)
		if err != nil {
			return fmt.Errorf("starting %q: %w", name, err)
		}
		if !started {
			klog.Warningf("Skipping %q", name)
			continue
		}
		check := controllerhealthz.NamedPingChecker(name)
		if hc, ok := ctrl.(controller.HealthCheckable); ok {
			if real := hc.HealthChecker(); real != nil {
				check = controllerhealthz.NamedHealthChecker(name, real)
			}
		}
		checks = append(checks, check)
		klog.Infof("Started %q", name)
		time.Sleep(wait.Jitter(c.ComponentConfig.Generic.ControllerStartInterval.Duration, app.ControllerStartJitter))
	}
	healthzHandler.AddHealthChecker(checks...)

	if err := genericcontrollermanager.WaitForAPIServer(c.VersionedClient, 10*time.Second); err != nil {
		return fmt.Errorf("waiting for the API server: %w", err)
	}
	c.SharedInformers.Start(ctx.Done())
	cctx.InformerFactory.Start(ctx.Done())

	if waitSynced(ctx, c, cctx, cloud) {
		ready.setRunning()
		klog.InfoS("Controllers run on synced informers: ready")
	}
	<-ctx.Done()
	return nil
}

// waitSynced waits until the shared informers, the controller context's
// informers and the provider's own (pools ConfigMap, agent Leases) have
// synced; false if ctx ended first.
func waitSynced(ctx context.Context, c *config.CompletedConfig, cctx genericcontrollermanager.ControllerContext, cloud cloudprovider.Interface) bool {
	for _, f := range []interface {
		WaitForCacheSync(<-chan struct{}) map[reflect.Type]bool
	}{c.SharedInformers, cctx.InformerFactory} {
		for typ, ok := range f.WaitForCacheSync(ctx.Done()) {
			if !ok {
				klog.InfoS("Informer did not sync", "type", typ.String())
				return false
			}
		}
	}
	if s, ok := cloud.(interface{ HasSynced() bool }); ok {
		return cache.WaitForNamedCacheSyncWithContext(ctx, s.HasSynced)
	}
	return true
}
