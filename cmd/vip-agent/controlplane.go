package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/pflag"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"

	"github.com/vip-lb/vip/pkg/announce"
	"github.com/vip-lb/vip/pkg/announce/bgp"
	"github.com/vip-lb/vip/pkg/bgpconfig"
	"github.com/vip-lb/vip/pkg/controlplane"
	"github.com/vip-lb/vip/pkg/dhcp"
)

// cpConfig is the control-plane part of the command line and environment.
type cpConfig struct {
	address        string
	port           int
	cidr           string
	leaseName      string
	localAPIServer string
	resolvePeriod  time.Duration
	probePeriod    time.Duration
	probeTimeout   time.Duration
	ddns           bool
}

func defaultCPConfig() cpConfig {
	return cpConfig{
		port: 6443, leaseName: controlplane.DefaultLeaseName, resolvePeriod: controlplane.DefaultResolvePeriod,
		probePeriod: controlplane.DefaultProbePeriod, probeTimeout: controlplane.DefaultProbeTimeout,
	}
}

// cpEnvFlags maps kube-vip's control-plane environment variables onto flags.
var cpEnvFlags = map[string]string{
	"address": "address", "vip_address": "address", "port": "port", "vip_cidr": "vip-cidr",
	"vip_leasename": "lease-name", "kubernetes_addr": "local-apiserver", "vip_ddns": "ddns",
}

func (p *cpConfig) flags(fs *pflag.FlagSet) {
	fs.StringVar(&p.address, "address", p.address, "Control-plane VIP with --controlplane: an IP address or a DNS name, re-resolved every --address-refresh (env address, vip_address).")
	fs.IntVar(&p.port, "port", p.port, "API server port (env port); the local API server is https://127.0.0.1:PORT unless --local-apiserver says otherwise.")
	fs.StringVar(&p.cidr, "vip-cidr", p.cidr, "kube-vip compatibility (env vip_cidr): the VIP is always bound as a host address (/32, /128).")
	fs.StringVar(&p.leaseName, "lease-name", p.leaseName, "Control-plane Lease, in --namespace (env vip_leasename).")
	fs.StringVar(&p.localAPIServer, "local-apiserver", p.localAPIServer, "This node's own API server, used for the control-plane election and /readyz, never the VIP (env kubernetes_addr; default https://127.0.0.1:PORT).")
	fs.DurationVar(&p.resolvePeriod, "address-refresh", p.resolvePeriod, "How often a DNS --address is resolved again.")
	fs.DurationVar(&p.probePeriod, "apiserver-probe-period", p.probePeriod, "How often the local API server's /readyz is asked; two failures in a row give the VIP up.")
	fs.DurationVar(&p.probeTimeout, "apiserver-probe-timeout", p.probeTimeout, "Timeout of one /readyz request.")
	fs.BoolVar(&p.ddns, "ddns", p.ddns, "Dynamic DNS (env vip_ddns): obtain the address of the DNS name in --address by DHCP on a macvlan of --interface, sending the name's first label as host name.")
}

// validate checks the control-plane settings (with --controlplane only).
func (p *cpConfig) validate(c *config) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{errConfig}, args...)...)
	}
	if p.address == "" {
		return bad("--controlplane (cp_enable) needs --address (address or vip_address): the control-plane VIP, an IP address or a DNS name")
	}
	if a, err := netip.ParseAddr(p.address); err == nil {
		a = a.Unmap()
		if a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() {
			return bad("--address %s cannot be a virtual IP", p.address)
		}
	} else if errs := validation.IsDNS1123Subdomain(strings.TrimSuffix(p.address, ".")); len(errs) > 0 {
		return bad("--address %q is neither an IP address nor a DNS name", p.address)
	}
	if p.ddns {
		switch _, err := netip.ParseAddr(p.address); {
		case err == nil:
			return bad("--ddns (vip_ddns, dynamic DNS) needs a DNS name in --address, not the address %s", p.address)
		case c.iface == "":
			return bad("--ddns (vip_ddns, dynamic DNS) needs --interface (vip_interface): the DHCP lease is taken on a macvlan of it")
		case c.bgp && !c.leaderElection:
			return bad("--ddns (vip_ddns, dynamic DNS) with BGP needs --leader-election: one node holds the DHCP lease")
		}
	}
	if p.port < 1 || p.port > 65535 {
		return bad("--port %d is not a TCP port", p.port)
	}
	if p.cidr != "" {
		if n, err := strconv.Atoi(strings.TrimPrefix(p.cidr, "/")); err != nil || n < 0 || n > 128 {
			return bad("--vip-cidr (vip_cidr) %q is not a prefix length", p.cidr)
		}
	}
	if errs := validation.IsDNS1123Subdomain(p.leaseName); len(errs) > 0 {
		return bad("--lease-name (vip_leasename) %q: %s", p.leaseName, errs[0])
	}
	if _, err := p.localURL(); err != nil {
		return bad("--local-apiserver (kubernetes_addr): %v", err)
	}
	if p.resolvePeriod <= 0 || p.probePeriod <= 0 || p.probeTimeout <= 0 {
		return bad("--address-refresh, --apiserver-probe-period and --apiserver-probe-timeout must be positive")
	}
	return nil
}

// localURL is the local API server's URL; kube-vip's kubernetes_addr may
// be host:port or a URL.
func (p *cpConfig) localURL() (string, error) {
	s := p.localAPIServer
	if s == "" {
		return "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port)), nil
	}
	if !strings.Contains(s, "://") {
		if _, _, err := net.SplitHostPort(s); err != nil {
			s = net.JoinHostPort(s, strconv.Itoa(p.port))
		}
		s = "https://" + s
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return "", fmt.Errorf("%q is not an API server URL", p.localAPIServer)
	}
	return u.Scheme + "://" + u.Host, nil
}

// localRestConfig is the cluster credentials pointed at this node's own API
// server. Its serving certificate is checked for the name "kubernetes"
// (every kube-apiserver certificate has it) when the URL holds an address.
func localRestConfig(c config) (*rest.Config, error) {
	rc, err := restConfig(c)
	if err != nil {
		return nil, err
	}
	local, err := c.cp.localURL()
	if err != nil {
		return nil, fmt.Errorf("%w: --local-apiserver: %v", errConfig, err)
	}
	lc := rest.CopyConfig(rc)
	lc.Host = local
	if u, _ := url.Parse(local); u != nil {
		if _, err := netip.ParseAddr(u.Hostname()); err == nil && lc.TLSClientConfig.ServerName == "" && !lc.TLSClientConfig.Insecure {
			lc.TLSClientConfig.ServerName = "kubernetes"
		}
	}
	lc.UserAgent = "vip-agent/control-plane"
	return lc, nil
}

// startControlPlane runs the control-plane VIP next to Service mode on the
// same announcer when --controlplane is set. The returned function stops
// it: the VIP is withdrawn and the Lease released when it returns (it may
// be called more than once).
func startControlPlane(ctx context.Context, c config, ann announce.Announcer, reg prometheus.Registerer, log logr.Logger) (stop func(), err error) {
	if !c.controlPlane {
		return func() {}, nil
	}
	ctl, err := newControlPlane(c, ann, reg, log)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = ctl.Run(ctx)
	}()
	return func() { cancel(); <-done }, nil
}

func newControlPlane(c config, ann announce.Announcer, reg prometheus.Registerer, log logr.Logger) (*controlplane.Controller, error) {
	lc, err := localRestConfig(c)
	if err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(lc)
	if err != nil {
		return nil, fmt.Errorf("building the local API server client: %w", err)
	}
	iface := c.iface
	if c.bgp {
		iface = "" // the speaker's own interface (lo by default)
	}
	var ddns controlplane.DDNS
	if c.cp.ddns {
		// Its own link prefix, so that the Service leases' cleanup and
		// this one leave each other's macvlans alone.
		dm, err := dhcp.New(dhcp.Options{Prefix: "vipc", Logger: log.WithName("ddns")})
		if err != nil {
			return nil, fmt.Errorf("dynamic DNS: %w", err)
		}
		if err := dm.Cleanup(context.Background()); err != nil {
			log.Error(err, "removing macvlans left by a previous run")
		}
		ddns = dm
	}
	if c.cp.cidr != "" && c.cp.cidr != "32" && c.cp.cidr != "128" && c.cp.cidr != "/32" && c.cp.cidr != "/128" {
		log.Info("vip_cidr is ignored: the control-plane VIP is bound as a host address", "vip_cidr", c.cp.cidr)
	}
	ctl, err := controlplane.New(controlplane.Options{
		Client: client, Namespace: c.namespace, LeaseName: c.cp.leaseName, Identity: c.nodeName,
		Address: c.cp.address, Interface: iface, Announcer: ann,
		EveryReadyNode: c.bgp && !c.leaderElection,
		LeaseDuration:  c.leaseDuration, RenewDeadline: c.renewDeadline, RetryPeriod: c.retryPeriod,
		ProbePeriod: c.cp.probePeriod, ProbeTimeout: c.cp.probeTimeout, ResolvePeriod: c.cp.resolvePeriod,
		Logger: log.WithName("control-plane"), Registerer: reg,
		DDNS: ddns, DDNSInterface: c.iface,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errConfig, err)
	}
	log.Info("control-plane VIP enabled", "address", c.cp.address, "localAPIServer", lc.Host,
		"lease", c.namespace+"/"+c.cp.leaseName)
	return ctl, nil
}

// serveControlPlane runs the agent for the control-plane VIP only
// (svc_enable=false): no Service informers, no node heartbeats.
func serveControlPlane(ctx context.Context, c config, log logr.Logger) error {
	reg := newRegistry()
	var ann announce.Announcer
	if c.bgp {
		sp, err := controlPlaneSpeaker(ctx, c, reg, log)
		if err != nil {
			return err
		}
		ann = sp
	} else {
		l2, err := startLayer2(ctx, c, reg, log)
		if err != nil {
			return err
		}
		ann = l2
	}
	ctl, err := newControlPlane(c, ann, reg, log)
	if err != nil {
		_ = ann.Close()
		return err
	}
	if c.metricsAddr != "" {
		m := http.NewServeMux()
		m.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		m.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
		m.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
		addr, err := metricsListenAddr(c, apiHostOf(c))
		if err == nil {
			var stop func()
			if stop, err = serveMetrics(addr, m); err == nil {
				defer stop()
			}
		}
		if err != nil {
			_ = ann.Close()
			return err
		}
	}
	mode := "arp"
	if c.bgp {
		mode = "bgp"
	}
	log.Info("started", "node", c.nodeName, "mode", mode, "services", false, "controlPlane", true)
	runErr := ctl.Run(ctx)
	if err := ann.Close(); err != nil {
		log.Error(err, "removing addresses")
	}
	log.Info("stopped")
	return runErr
}

// controlPlaneSpeaker starts the BGP speaker of a control-plane-only agent
// (node annotations, when asked for, are read at start).
func controlPlaneSpeaker(ctx context.Context, c config, reg prometheus.Registerer, log logr.Logger) (*bgp.Speaker, error) {
	base, pw, err := c.bgpc.static()
	if err != nil {
		return nil, err
	}
	sel, err := c.bgpc.selectors()
	if err != nil {
		return nil, err
	}
	cfg := base
	if c.bgpc.annotations != "" || len(sel) > 0 {
		// The node's own API server, never the VIP: it is not up yet.
		lc, err := localRestConfig(c)
		if err != nil {
			return nil, err
		}
		client, err := kubernetes.NewForConfig(lc)
		if err != nil {
			return nil, fmt.Errorf("building the local API server client: %w", err)
		}
		bcast := record.NewBroadcaster(record.WithContext(ctx))
		bcast.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
		rec := bcast.NewRecorder(scheme.Scheme, v1.EventSource{Component: "vip-agent", Host: c.nodeName})
		nw := newNodeWatch(client, c.nodeName, c.bgpc.annotations, base, pw, sel, log.WithName("bgp-node"), rec)
		if cfg, err = nw.start(ctx); err != nil {
			return nil, err
		}
	} else if cfg, err = resolveBGP(base, pw, nil, nil, nil); err != nil {
		return nil, fmt.Errorf("%w: %v", errConfig, err)
	}
	iface := c.servicesIface
	if iface == "" {
		iface = c.iface
	}
	sp, err := bgp.New(ctx, bgp.Options{Config: cfg, Interface: iface, StatePath: c.statePath, Logger: log.WithName("bgp"), Registerer: reg})
	if err != nil {
		if errors.Is(err, bgpconfig.ErrInvalid) {
			return nil, fmt.Errorf("%w: %v", errConfig, err)
		}
		return nil, fmt.Errorf("starting BGP: %w", err)
	}
	if err := sp.Cleanup(ctx); err != nil {
		log.Error(err, "removing addresses left by a previous run")
	}
	return sp, nil
}
