// Command vip-agent advertises the addresses of LoadBalancer Services from
// the nodes of a bare-metal cluster.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/pflag"
	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	logsapi "k8s.io/component-base/logs/api/v1"
	_ "k8s.io/component-base/logs/json/register"
	"k8s.io/klog/v2"

	"github.com/vip-lb/vip/internal/listwatch"
	"github.com/vip-lb/vip/internal/version"
	"github.com/vip-lb/vip/pkg/agent"
	"github.com/vip-lb/vip/pkg/announce"
	"github.com/vip-lb/vip/pkg/announce/probe"
	"github.com/vip-lb/vip/pkg/controlplane"
	"github.com/vip-lb/vip/pkg/dhcp"
	"github.com/vip-lb/vip/pkg/election"
	"github.com/vip-lb/vip/pkg/lbsvc"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "vip-agent:", err)
		if errors.Is(err, errConfig) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) > 0 && args[0] == "manifest" {
		return runManifest(args[1:], os.Stdout)
	}
	args, start := kubeVipCommand(args) // kubevip_command.go
	cfg := defaultConfig()
	fs := pflag.NewFlagSet("vip-agent", pflag.ContinueOnError)
	cfg.flags(fs)
	logCfg := logsapi.NewLoggingConfiguration()
	logsapi.AddFlags(logCfg, fs)
	showVersion := fs.Bool("version", false, "Print the version and exit.")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errConfig, err)
	}
	if *showVersion {
		fmt.Println("vip-agent", version.Version)
		return nil
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errConfig, fs.Args())
	}
	env := processEnv()
	if err := applyEnv(fs, env); err != nil {
		return err
	}
	startCP, err := applyStart(fs, start)
	if err != nil {
		return err
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	if err := logsapi.ValidateAndApply(logCfg, nil); err != nil {
		return fmt.Errorf("%w: logging: %v", errConfig, err)
	}
	log := klog.Background().WithName("vip-agent")
	if err := cfg.resolveCredentials(osHostFiles(), log); err != nil {
		return err
	}
	if acc := acceptedEnv(env.lookup); len(acc) > 0 {
		log.Info("kube-vip settings accepted without effect: vip already works that way (docs/migration.md)", "settings", acc)
	}
	if startCP {
		log.Info("kube-vip's start command: the control-plane VIP is on (cp_enable not set)")
	}
	if cfg.servicesNamespace != "" {
		log.Info("serving the Services of one namespace only (svc_namespace)", "namespace", cfg.servicesNamespace)
	}
	if cfg.controlPlane && !cfg.servicesSet {
		log.Info("control plane only: LoadBalancer Services are not served (cp_enable without svc_enable, kube-vip's default); set svc_enable=true (--services) to serve them")
	}
	if !cfg.controlPlane && (cfg.leaseDuration != controlplane.DefaultLeaseDuration ||
		cfg.renewDeadline != controlplane.DefaultRenewDeadline || cfg.retryPeriod != controlplane.DefaultRetryPeriod) {
		log.Info("kube-vip lease timings accepted but unused: they time the control-plane Lease, and vip detects dead nodes by heartbeat",
			"heartbeatPeriod", cfg.heartbeatPeriod, "heartbeatTimeout", cfg.heartbeatTimeout)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	stopHealth, err := serveHealthPort(cfg)
	if err != nil {
		return err
	}
	defer stopHealth()
	if cfg.controlPlane && !cfg.services {
		return serveControlPlane(ctx, cfg, log)
	}
	if cfg.bgp {
		return serveBGP(ctx, cfg, log)
	}
	return serve(ctx, cfg, log)
}

func restConfig(c config) (*rest.Config, error) {
	var rc *rest.Config
	var err error
	if c.kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", c.kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil && c.cred != "" {
		err = fmt.Errorf("%s credentials: %w", c.cred, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: Kubernetes client: %v", errConfig, err)
	}
	rc.QPS, rc.Burst = c.qps, c.burst
	rc.UserAgent = "vip-agent"
	rc.Wrap(listwatch.Retry)
	return rc, nil
}

func serve(ctx context.Context, c config, log logr.Logger) error {
	rc, err := restConfig(c)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("building client: %w", err)
	}
	reg := newRegistry()

	bcast := record.NewBroadcaster(record.WithContext(context.Background())) // outlives SIGTERM: the stop writes Events too
	bcast.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	defer bcast.Shutdown()
	rec := bcast.NewRecorder(scheme.Scheme, v1.EventSource{Component: "vip-agent", Host: c.nodeName})

	l2, err := startLayer2(ctx, c, reg, log)
	if err != nil {
		return err
	}
	// The control-plane VIP starts before anything waits for the API: the
	// kubeconfig's server may be that VIP (kubeadm's admin.conf).
	stopCP, err := startControlPlane(ctx, c, l2, reg, log)
	if err != nil {
		return err
	}
	defer stopCP()

	var ag *agent.Agent
	portMap, stopUPnP, err := startUPnP(ctx, c, reg, log.WithName("upnp"), func(key string, warning bool, reason, msg string) {
		if ag != nil {
			ag.PortMapEvent(key, warning, reason, msg)
		}
	})
	if err != nil {
		return err
	}
	defer stopUPnP() // after the agent stops: removes the gateway's mappings
	dm, err := dhcp.New(dhcp.Options{Logger: log.WithName("dhcp"), Registerer: reg,
		OnEvent: func(key string, e dhcp.Event) {
			if ag != nil {
				ag.OnDHCPEvent(key, e)
			}
		}})
	if err != nil {
		return fmt.Errorf("starting the DHCP client: %w", err)
	}
	if err := dm.Cleanup(ctx); err != nil {
		log.Error(err, "removing macvlans left by a previous run")
	}
	metricsAddr := ""
	if c.metricsAddr != "" {
		if metricsAddr, err = metricsListenAddr(c, rc.Host); err != nil {
			return err
		}
	}
	// Node addresses gate the election health endpoint both ways; its
	// informer syncs before the election runs (below).
	nodes := newNodeAddresses(client)
	health := healthURL(c, metricsAddr, rc)
	el, err := election.New(election.Options{
		PeerAddressAllowed: nodes.Allowed,
		Client:             client, Namespace: c.namespace, NodeName: c.nodeName,
		HeartbeatPeriod: c.heartbeatPeriod, HeartbeatTimeout: c.heartbeatTimeout,
		Logger: log.WithName("election"), Registerer: reg,
		OnServiceLeaseChange: func(ns, name string) {
			if ag != nil {
				ag.OnServiceLeaseChange(ns, name)
			}
		},
		OnNodeChange: func(node string, alive bool) {
			if ag != nil {
				ag.OnNodeChange(node, alive)
			}
		},
		HealthAddress: health, Rebalance: c.rebalance, SettleTime: c.settle,
		// Candidates are only nodes whose agent has synced: one that cannot
		// (missing RBAC) must not win addresses it would never announce.
		Ready: func() bool { return ag != nil && ag.Synced() },
	})
	if err != nil {
		return fmt.Errorf("%w: election: %v", errConfig, err)
	}
	ag, err = agent.New(agent.Options{
		Client: client, NodeName: c.nodeName, Mode: agent.ModeARP,
		Class:     lbsvc.ClassRule{Name: c.className, Only: c.classOnly},
		Announcer: l2, Elector: agent.FromElection(el), DHCP: dm, Prober: newProber(c, l2),
		Interface: c.iface, ServicesInterface: c.servicesIface, AllowedInterfaces: c.allowedIfaces,
		ServicesNamespace: c.servicesNamespace,
		ConfigMapName:     c.cmName, ConfigMapNamespace: c.cmNamespace, Namespace: c.namespace,
		Workers: c.workers, Recorder: rec, Logger: log.WithName("services"), Registerer: reg,
		PortMap: portMap,
	})
	if err != nil {
		return fmt.Errorf("%w: %v", errConfig, err)
	}

	if metricsAddr != "" {
		stop, err := serveMetrics(metricsAddr, mux(reg, el, ag, nodes.Allowed, log))
		if err != nil {
			return err
		}
		defer stop()
	}

	if err := nodes.start(ctx); err != nil {
		return err
	}
	elCtx, elCancel := context.WithCancel(context.Background())
	elDone := make(chan error, 1)
	go func() { elDone <- el.Run(elCtx) }()
	if !el.WaitForSync(ctx) {
		elCancel()
		return fmt.Errorf("election informers did not sync: %w", ctx.Err())
	}
	log.Info("started", "node", c.nodeName, "mode", "arp", "heartbeatPeriod", c.heartbeatPeriod,
		"heartbeatTimeout", c.heartbeatTimeout, "health", health)
	// The node's addresses and gateways go on the heartbeat for vip-ccm,
	// which never hands them out; the addresses vip binds are not among them.
	go agent.PublishNodeInfo(ctx, nodeInfoPeriod, log.WithName("nodeinfo"),
		func(a netip.Addr) bool { return slices.Contains(l2.Held(), a) }, el.Publish)
	runErr := ag.Run(ctx)
	stopCP() // the control-plane VIP is withdrawn and its Lease released

	// Graceful stop: withdraw first, then hand the Leases to successors, so
	// no address is ever announced from two nodes and the successors take
	// over at once instead of waiting for the heartbeat to go stale.
	t0 := time.Now()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ag.WithdrawEverything(sctx)
	_ = dm.Close() // leases kept for the successors; macvlans removed before the hand-off
	if err := el.Shutdown(sctx); err != nil {
		log.Error(err, "handing Leases off")
	}
	elCancel()
	<-elDone
	if err := l2.Close(); err != nil {
		log.Error(err, "removing addresses")
	}
	log.Info("stopped", "handOff", time.Since(t0).String())
	return runErr
}

// newProber probes addresses before their first announcement (nil when
// --address-probe-timeout is 0).
func newProber(c config, l2 *announce.Layer2) agent.Prober {
	if c.probeTimeout <= 0 {
		return nil
	}
	return probe.New(probe.Options{Timeout: c.probeTimeout, InterfaceFor: l2.InterfaceFor})
}

// nodeInfoPeriod is how often the node's addresses are read for the
// heartbeat annotations.
const nodeInfoPeriod = 10 * time.Second

func mux(reg *prometheus.Registry, el *election.Elector, ag *agent.Agent, fromNode func(netip.Addr) bool, log logr.Logger) http.Handler {
	m := http.NewServeMux()
	m.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	m.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	m.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ag.Synced() || el.Fenced() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	m.Handle("/vip/election", fromNodes(fromNode, el.HealthHandler(), log))
	return m
}

// healthURL is where peers reach this agent's election health handler
// served at listen.
func healthURL(c config, listen string, rc *rest.Config) string {
	if listen == "" {
		return ""
	}
	bound, port, err := net.SplitHostPort(listen)
	if err != nil {
		return ""
	}
	host := c.healthAdvertise
	if a, err := netip.ParseAddr(bound); host == "" && err == nil && !a.IsUnspecified() {
		host = bound
	}
	if host == "" {
		host = localAddrTowards(rc.Host)
	}
	if host == "" {
		return ""
	}
	return "http://" + net.JoinHostPort(host, port) + "/vip/election"
}

// localAddrTowards returns this host's source address towards the API
// server (a UDP "connect" sends nothing).
func localAddrTowards(apiHost string) string {
	u, err := url.Parse(apiHost)
	if err != nil || u.Host == "" {
		return ""
	}
	hostport := u.Host
	if u.Port() == "" {
		hostport = net.JoinHostPort(u.Hostname(), "443")
	}
	conn, err := net.Dial("udp", hostport)
	if err != nil {
		return ""
	}
	defer conn.Close()
	if ua, ok := conn.LocalAddr().(*net.UDPAddr); ok {
		return ua.IP.String()
	}
	return ""
}

// newRegistry is the agent's metrics registry, with the Go runtime and
// process collectors.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// startLayer2 opens the ARP/NDP announcer and removes the addresses a
// previous run left bound (from the state file).
func startLayer2(ctx context.Context, c config, reg prometheus.Registerer, log logr.Logger) (*announce.Layer2, error) {
	l2, err := announce.NewLayer2(announce.Options{
		Logger: log.WithName("announce"), Registerer: reg, StatePath: c.statePath,
		Count: c.garpCount, Interval: c.garpInterval,
	})
	if err != nil {
		return nil, fmt.Errorf("starting announcer: %w", err)
	}
	if err := l2.Cleanup(ctx); err != nil {
		log.Error(err, "removing addresses left by a previous run")
	}
	return l2, nil
}

// serveHealthPort answers /healthz on kube-vip's health_check_port, so a
// liveness probe written for kube-vip keeps passing (0: off). It listens
// on this node's address, as the metrics server does.
func serveHealthPort(c config) (stop func(), err error) {
	if c.healthPort == 0 {
		return func() {}, nil
	}
	hc := c
	hc.metricsAddr = net.JoinHostPort("", strconv.Itoa(c.healthPort))
	addr, err := metricsListenAddr(hc, apiHostOf(c))
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%w: health_check_port %d: %v", errConfig, c.healthPort, err)
	}
	m := http.NewServeMux()
	m.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	srv := &http.Server{Handler: m, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return func() { _ = srv.Close() }, nil
}
