package agentapp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"

	"github.com/vip-lb/vip/pkg/agentconfig"
	"github.com/vip-lb/vip/pkg/announce"
)

// app is one running agent: what every part shares.
type app struct {
	cfg    agentconfig.Config
	log    logr.Logger
	rc     *rest.Config
	client kubernetes.Interface
	reg    *prometheus.Registry
	rec    record.EventRecorder
	// listen is the metrics and health server's address ("" = off).
	listen string
	// local is the client of this node's own API server (localClient).
	local kubernetes.Interface
}

// services is the Service controller of one mode, built before the HTTP
// server starts and started after.
type services struct {
	// ready is its part of /readyz; election, when not nil, is served at
	// /vip/election (ARP mode).
	ready    func() bool
	election http.Handler
	// start waits for what the controller needs before it runs; run runs
	// it until ctx ends; stop is the graceful stop after run returns and
	// the control-plane VIP is released, before the announcer closes.
	start func(ctx context.Context) error
	run   func(ctx context.Context) error
	stop  func()
}

// Run runs the agent c describes until ctx ends, then stops it gracefully:
// the Service addresses are withdrawn (and, in ARP mode, handed to their
// successors), the control-plane VIP released and the announcer closed.
// Configuration errors wrap agentconfig.ErrConfig.
func Run(ctx context.Context, c agentconfig.Config, log logr.Logger) error {
	a, err := newApp(c, log)
	if err != nil {
		return err
	}
	stopHealth, err := serveHealthPort(c, a.rc.Host)
	if err != nil {
		return err
	}
	defer stopHealth()
	stopEvents, err := a.startEvents()
	if err != nil {
		return err
	}
	defer stopEvents()

	ann, err := a.startAnnouncer(ctx)
	if err != nil {
		return err
	}
	// The control-plane VIP starts before anything waits for the API: the
	// kubeconfig's server may be that VIP (kubeadm's admin.conf).
	cp, err := a.startControlPlane(ctx, ann.announcer)
	if err != nil {
		_ = ann.announcer.Close()
		return err
	}
	defer cp.stop()
	var svc *services
	if c.Services {
		if svc, err = a.newServices(ctx, ann); err != nil {
			cp.stop()
			_ = ann.announcer.Close()
			return err
		}
	}
	if a.listen != "" {
		stop, err := serveHTTP(a.listen, a.mux(svc))
		if err != nil {
			cp.stop()
			_ = ann.announcer.Close()
			return err
		}
		defer stop()
	}
	var runErr error
	if svc != nil {
		if err := svc.start(ctx); err != nil {
			return err
		}
		log.Info("started", append([]any{"node", c.NodeName, "controlPlane", c.ControlPlane}, ann.startedKV...)...)
		runErr = svc.run(ctx)
	} else {
		log.Info("started", append([]any{"node", c.NodeName, "services", false, "controlPlane", true}, ann.startedKV...)...)
		runErr = cp.wait(ctx)
	}
	cp.stop() // the control-plane VIP is withdrawn and its Lease released
	t0 := time.Now()
	if svc != nil {
		svc.stop()
	}
	ann.close()
	log.Info("stopped", "took", time.Since(t0).String())
	return runErr
}

func newApp(c agentconfig.Config, log logr.Logger) (*app, error) {
	rc, err := c.RestConfig()
	if err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("building client: %w", err)
	}
	a := &app{cfg: c, log: log, rc: rc, client: client, reg: newRegistry()}
	if c.MetricsAddress != "" {
		if a.listen, err = metricsListenAddr(c, rc.Host); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// startEvents starts the one Event broadcaster. It outlives ctx (cancelled
// by SIGTERM) so that the stop is recorded too; the returned function
// flushes and ends it. An agent without Services sends its Events through
// this node's own API server: the kubeconfig's may be the control-plane
// VIP, which is not up before the agent is.
func (a *app) startEvents() (stop func(), err error) {
	client := a.client
	if !a.cfg.Services {
		if client, err = a.localClient(); err != nil {
			return nil, err
		}
	}
	bcast := record.NewBroadcaster(record.WithContext(context.Background()))
	bcast.StartRecordingToSink(&forbiddenSink{EventSink: &typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")}, log: a.log})
	a.rec = bcast.NewRecorder(scheme.Scheme, v1.EventSource{Component: "vip-agent", Host: a.cfg.NodeName})
	return bcast.Shutdown, nil
}

// localClient talks to this node's own API server (control-plane VIP);
// one client, built on first use.
func (a *app) localClient() (kubernetes.Interface, error) {
	if a.local != nil {
		return a.local, nil
	}
	lc, err := a.cfg.LocalRestConfig()
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(lc)
	if err != nil {
		return nil, fmt.Errorf("building the local API server client: %w", err)
	}
	a.local = cs
	return cs, nil
}

// announcerPart is the started announcer of the mode.
type announcerPart struct {
	announcer announce.Announcer
	// close stops announcing and removes the addresses.
	close func()
	// startedKV are the mode's fields of the "started" log line.
	startedKV []any
	// layer-2 or BGP specifics the Service controller needs.
	l2  *layer2Part
	bgp *bgpPart
}

func (a *app) startAnnouncer(ctx context.Context) (*announcerPart, error) {
	if a.cfg.BGP {
		return a.startBGP(ctx)
	}
	return a.startLayer2(ctx)
}

func (a *app) newServices(ctx context.Context, ann *announcerPart) (*services, error) {
	if ann.bgp != nil {
		return a.bgpServices(ctx, ann.bgp)
	}
	return a.layer2Services(ctx, ann.l2)
}

// newRegistry is the agent's metrics registry, with the Go runtime and
// process collectors.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// configErr marks err as a configuration the agent refuses.
func configErr(err error) error {
	if errors.Is(err, agentconfig.ErrConfig) {
		return err
	}
	return fmt.Errorf("%w: %w", agentconfig.ErrConfig, err)
}
