package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/pflag"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/vip-lb/vip/pkg/agent"
	"github.com/vip-lb/vip/pkg/announce/bgp"
	"github.com/vip-lb/vip/pkg/bgpconfig"
	"github.com/vip-lb/vip/pkg/compat"
	"github.com/vip-lb/vip/pkg/lbsvc"
)

// bgpConfig is the BGP part of the command line and environment.
type bgpConfig struct {
	routerID, routerIface          string
	localAS, peerAS                uint32
	peerAddress, peerPass          string
	multihop                       bool
	peers                          string
	sourceIP, sourceIF             string
	holdTime, keepalive, retry     int
	listenPort                     int
	passwordFile                   string
	communities, largeCommunities  string
	localPref                      uint32
	gracefulRestart                bool
	restartTime                    int
	nextHop, nextHop6, annotations string
	peerSelectors                  []string
}

func defaultBGPConfig() bgpConfig {
	return bgpConfig{localAS: 65000, peerAS: 65000, holdTime: 30, keepalive: 10, retry: 5, listenPort: -1, restartTime: 120}
}

// bgpEnvFlags maps kube-vip's BGP environment variables onto flags.
var bgpEnvFlags = map[string]string{
	"bgp_routerid": "bgpRouterID", "bgp_routerinterface": "bgpRouterInterface",
	"bgp_as": "localAS", "bgp_peeras": "peerAS", "bgp_peeraddress": "peerAddress", "bgp_peerpass": "peerPass",
	"bgp_multihop": "multihop", "bgp_peers": "bgppeers", "bgp_sourceip": "sourceIP", "bgp_sourceif": "sourceIF",
	"bgp_hold_time": "bgp-hold-time", "bgp_keepalive_interval": "bgp-keepalive-interval", "annotation": "annotations",
	"bgp_peer_node_selectors": "bgp-peer-node-selector",
}

func (b *bgpConfig) flags(fs *pflag.FlagSet) {
	fs.StringVar(&b.routerID, "bgpRouterID", b.routerID, "BGP router ID, an IPv4 address (env bgp_routerid; default: --sourceIP).")
	fs.StringVar(&b.routerIface, "bgpRouterInterface", b.routerIface, "Take the router ID from this interface's first IPv4 address (env bgp_routerinterface).")
	fs.Uint32Var(&b.localAS, "localAS", b.localAS, "This node's AS (env bgp_as).")
	fs.Uint32Var(&b.peerAS, "peerAS", b.peerAS, "AS of --peerAddress (env bgp_peeras).")
	fs.StringVar(&b.peerAddress, "peerAddress", b.peerAddress, "A single BGP peer (env bgp_peeraddress); added to --bgppeers.")
	fs.StringVar(&b.peerPass, "peerPass", b.peerPass, "TCP MD5 password of --peerAddress (env bgp_peerpass).")
	fs.BoolVar(&b.multihop, "multihop", b.multihop, "eBGP multihop for --peerAddress (env bgp_multihop).")
	fs.StringVar(&b.peers, "bgppeers", b.peers, "Peers as address:AS:password:multihop[:port],… with IPv6 addresses in brackets (env bgp_peers).")
	fs.StringVar(&b.sourceIP, "sourceIP", b.sourceIP, "Local address of every BGP session (env bgp_sourceip).")
	fs.StringVar(&b.sourceIF, "sourceIF", b.sourceIF, "Bind every BGP session to this interface (env bgp_sourceif).")
	fs.IntVar(&b.holdTime, "bgp-hold-time", b.holdTime, "BGP hold time in seconds (env bgp_hold_time).")
	fs.IntVar(&b.keepalive, "bgp-keepalive-interval", b.keepalive, "BGP keepalive interval in seconds (env bgp_keepalive_interval).")
	fs.IntVar(&b.retry, "bgp-connect-retry", b.retry, "Seconds between connection attempts, and before reconnecting after a reset.")
	fs.IntVar(&b.listenPort, "bgp-listen-port", b.listenPort, "Accept BGP sessions on this port (-1: only dial out).")
	fs.StringVar(&b.passwordFile, "bgp-password-file", b.passwordFile, "File or mounted Secret folder with TCP MD5 passwords (folder: one file per peer address, ':' written '-', and \"password\" for the rest).")
	fs.StringVar(&b.communities, "bgp-communities", b.communities, "Communities on every route: asn:value or well-known names, comma-separated.")
	fs.StringVar(&b.largeCommunities, "bgp-large-communities", b.largeCommunities, "Large communities on every route: global:local1:local2, comma-separated.")
	fs.Uint32Var(&b.localPref, "bgp-local-pref", b.localPref, "LOCAL_PREF of every route (iBGP peers only; 0: not set).")
	fs.BoolVar(&b.gracefulRestart, "bgp-graceful-restart", b.gracefulRestart, "Advertise graceful restart, so peers keep this node's routes across an agent crash or upgrade.")
	fs.IntVar(&b.restartTime, "bgp-restart-time", b.restartTime, "Graceful restart time in seconds.")
	fs.StringVar(&b.nextHop, "bgp-nexthop", b.nextHop, "Next hop of IPv4 routes (default: each session's local address); makes IPv6 sessions carry IPv4 too.")
	fs.StringVar(&b.nextHop6, "bgp-nexthop6", b.nextHop6, "Next hop of IPv6 routes (default: each session's local address); makes IPv4 sessions carry IPv6 too.")
	fs.StringArrayVar(&b.peerSelectors, "bgp-peer-node-selector", b.peerSelectors, "Limit a peer to nodes whose labels match: address=label-selector, e.g. 10.0.0.1=rack=a (repeatable, or ';'-separated; env bgp_peer_node_selectors). Peers without a selector peer with every node.")
	fs.StringVar(&b.annotations, "annotations", b.annotations, "Read per-node BGP settings from Node annotations under this prefix, e.g. kube-vip.io (env annotation).")
}

func badBGP(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errConfig}, args...)...)
}

func parseAddrFlag(name, v string) (netip.Addr, error) {
	if v == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		return a, badBGP("--%s %q is not an IP address", name, v)
	}
	return a.Unmap(), nil
}

// firstIPv4 returns the first IPv4 address of the interface.
func firstIPv4(name string) (netip.Addr, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return netip.Addr{}, badBGP("--bgpRouterInterface (bgp_routerinterface) %q: %v", name, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, badBGP("--bgpRouterInterface (bgp_routerinterface) %q: %v", name, err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap().Is4() {
				return ip.Unmap(), nil
			}
		}
	}
	return netip.Addr{}, badBGP("--bgpRouterInterface (bgp_routerinterface) %q has no IPv4 address", name)
}

// static builds the configuration the flags describe, before node
// annotations, and the passwords from the password file.
func (b *bgpConfig) static() (bgpconfig.Config, bgpconfig.Passwords, error) {
	var c bgpconfig.Config
	var pw bgpconfig.Passwords
	var err error
	if b.routerID != "" && b.routerIface != "" {
		return c, pw, badBGP("--bgpRouterID (bgp_routerid) and --bgpRouterInterface (bgp_routerinterface) are both set: choose one")
	}
	if b.peerAddress == "" && b.peerPass != "" {
		return c, pw, badBGP("--peerPass (bgp_peerpass) is set without --peerAddress (bgp_peeraddress); put per-peer passwords in --bgppeers or --bgp-password-file")
	}
	if b.peerAddress == "" && b.multihop {
		return c, pw, badBGP("--multihop (bgp_multihop) is set without --peerAddress (bgp_peeraddress); set multihop per peer in --bgppeers")
	}
	c.AS = b.localAS
	if c.RouterID, err = parseAddrFlag("bgpRouterID", b.routerID); err != nil {
		return c, pw, err
	}
	if b.routerIface != "" {
		if c.RouterID, err = firstIPv4(b.routerIface); err != nil {
			return c, pw, err
		}
	}
	if c.SourceIP, err = parseAddrFlag("sourceIP", b.sourceIP); err != nil {
		return c, pw, err
	}
	if !c.RouterID.IsValid() && c.SourceIP.Is4() {
		c.RouterID = c.SourceIP
	}
	c.SourceInterface = b.sourceIF
	if c.NextHop4, err = parseAddrFlag("bgp-nexthop", b.nextHop); err != nil {
		return c, pw, err
	}
	if c.NextHop6, err = parseAddrFlag("bgp-nexthop6", b.nextHop6); err != nil {
		return c, pw, err
	}
	if b.holdTime < 0 || b.keepalive < 0 || b.retry < 0 || b.restartTime < 0 {
		return c, pw, badBGP("BGP timers must not be negative")
	}
	c.HoldTime = time.Duration(b.holdTime) * time.Second
	c.KeepaliveInterval = time.Duration(b.keepalive) * time.Second
	c.ConnectRetry = time.Duration(b.retry) * time.Second
	c.ListenPort = int32(b.listenPort)
	if b.listenPort < -1 || b.listenPort == 0 || b.listenPort > 65535 {
		return c, pw, badBGP("--bgp-listen-port %d must be -1 or 1-65535", b.listenPort)
	}
	c.GracefulRestart = b.gracefulRestart
	c.RestartTime = time.Duration(b.restartTime) * time.Second
	c.LocalPref = b.localPref
	if c.Communities, err = bgpconfig.ParseCommunities(b.communities); err != nil {
		return c, pw, fmt.Errorf("%w: --bgp-communities: %v", errConfig, err)
	}
	if c.LargeCommunities, err = bgpconfig.ParseLargeCommunities(b.largeCommunities); err != nil {
		return c, pw, fmt.Errorf("%w: --bgp-large-communities: %v", errConfig, err)
	}
	if c.Peers, err = bgpconfig.ParsePeers(b.peers); err != nil {
		return c, pw, fmt.Errorf("%w: --bgppeers (bgp_peers): %v", errConfig, err)
	}
	if b.peerAddress != "" {
		a, err := netip.ParseAddr(b.peerAddress)
		if err != nil {
			return c, pw, badBGP("--peerAddress (bgp_peeraddress) %q is not an IP address", b.peerAddress)
		}
		p := bgpconfig.Peer{Address: a.Unmap(), AS: b.peerAS, Password: b.peerPass}
		if b.multihop {
			p.MultihopTTL = bgpconfig.DefaultMultihopTTL
		}
		c.Peers = append([]bgpconfig.Peer{p}, c.Peers...)
	}
	if b.passwordFile != "" {
		if pw, err = bgpconfig.LoadPasswords(b.passwordFile); err != nil {
			return c, pw, fmt.Errorf("%w: --bgp-password-file: %v", errConfig, err)
		}
	}
	return c, pw, nil
}

// selectors parses --bgp-peer-node-selector.
func (b *bgpConfig) selectors() (bgpconfig.PeerSelectors, error) {
	sel, err := bgpconfig.ParsePeerSelectors(b.peerSelectors)
	if err != nil {
		return nil, fmt.Errorf("%w: --bgp-peer-node-selector (bgp_peer_node_selectors): %v", errConfig, err)
	}
	return sel, nil
}

// resolveBGP lays node settings and passwords over base, keeps the peers
// whose node selectors match nodeLabels, and checks the result.
func resolveBGP(base bgpconfig.Config, pw bgpconfig.Passwords, node *bgpconfig.NodeSettings, sel bgpconfig.PeerSelectors, nodeLabels map[string]string) (bgpconfig.Config, error) {
	c := base
	if node != nil {
		c = node.Apply(base)
	}
	var err error
	if c.Peers, err = pw.Apply(c.Peers); err != nil {
		return c, err
	}
	if len(c.Peers) > 0 {
		c = sel.Select(c, nodeLabels)
	}
	c = c.Normalize()
	return c, c.Validate()
}

// checkBGPEnv refuses environment variables that look like BGP settings but
// are not ones vip reads, so a typo or an unsupported kube-vip setting stops
// the agent instead of being ignored. env is the environment the rest of
// the configuration is read from (applyEnv runs this in BGP mode).
func checkBGPEnv(env environment) error {
	for _, name := range env.names() {
		if !strings.HasPrefix(name, "bgp_") || name == "bgp_enable" {
			continue
		}
		if _, ok := bgpEnvFlags[name]; ok {
			continue
		}
		if _, ok := compat.Lookup(compat.Env, name); ok {
			continue // kube-vip's: accepted, or refused by applyEnv
		}
		return badBGP("environment %s is not a BGP setting vip knows (see docs/bgp.md)", name)
	}
	return nil
}

// validate checks the BGP settings at start. With --annotations the node
// may still supply the AS, router ID and peers, so only the rest is checked.
func (b *bgpConfig) validate() error {
	base, pw, err := b.static()
	if err != nil {
		return err
	}
	if _, err := b.selectors(); err != nil {
		return err
	}
	if b.annotations != "" {
		if !base.RouterID.IsValid() {
			base.RouterID = netip.MustParseAddr("192.0.2.1") // placeholder: the src-ip annotation may set it
		}
		if len(base.Peers) == 0 {
			base.Peers = []bgpconfig.Peer{{Address: netip.MustParseAddr("192.0.2.2"), AS: 1}}
		}
	}
	if _, err := resolveBGP(base, pw, nil, nil, nil); err != nil {
		return fmt.Errorf("%w: %v", errConfig, err)
	}
	return nil
}

// nodeWatchClient is the client that reads this Node's BGP annotations and
// labels. With the control-plane VIP it talks to the node's own API server:
// the kubeconfig (kubeadm's admin.conf) may name the VIP, which is not up
// before the speaker has the settings from the Node, so going through the
// VIP would wait forever on a cold start.
func nodeWatchClient(c config, client kubernetes.Interface) (kubernetes.Interface, error) {
	if !c.controlPlane {
		return client, nil
	}
	lc, err := localRestConfig(c)
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(lc)
	if err != nil {
		return nil, fmt.Errorf("building the local API server client: %w", err)
	}
	return cs, nil
}

// nodeRef is the object Node events are attached to.
func nodeRef(node string) *v1.ObjectReference {
	return &v1.ObjectReference{Kind: "Node", Name: node, UID: types.UID(node)}
}

// Node event reasons of BGP mode.
const (
	reasonSessionDown   = "BGPSessionDown"
	reasonSessionUp     = "BGPSessionEstablished"
	reasonConfigInvalid = "BGPConfigInvalid"
	reasonStopped       = "BGPStopped"
	reasonNoPeers       = "BGPNoPeerSelected"
	reasonPasswordPlain = "BGPPasswordNotSecret"
)

// plainPasswordSources names the settings that carry a BGP password in the
// Pod spec (flags or kube-vip's environment) rather than in a Secret.
func (b *bgpConfig) plainPasswordSources(peers []bgpconfig.Peer) []string {
	var out []string
	if b.peerPass != "" {
		out = append(out, "--peerPass (bgp_peerpass)")
	}
	for _, p := range peers {
		if p.Password != "" && b.peers != "" {
			out = append(out, "--bgppeers (bgp_peers)")
			break
		}
	}
	return out
}

// warnPlainPasswords says once, in the log and as a Warning Event on the
// Node, that passwords arrive in plain text, naming where (never the value).
func warnPlainPasswords(log logr.Logger, rec record.EventRecorder, node string, sources []string) {
	if len(sources) == 0 {
		return
	}
	where := strings.Join(sources, ", ")
	log.Info("BGP passwords are given in plain text, readable by anyone who may read the Pod or Node; move them to a Secret mounted at --bgp-password-file", "sources", sources)
	rec.Eventf(nodeRef(node), v1.EventTypeWarning, reasonPasswordPlain,
		"BGP passwords arrive in plain text through %s; move them to a Secret mounted at --bgp-password-file (see docs/bgp.md)", where)
}

// serveBGP runs the agent in BGP mode: every eligible node advertises the
// Service addresses from its embedded speaker.
func serveBGP(ctx context.Context, c config, log logr.Logger) error {
	rc, err := restConfig(c)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("building client: %w", err)
	}
	reg := newRegistry()
	// Events outlive ctx (cancelled by SIGTERM) so the stop is recorded too.
	evCtx, evCancel := context.WithCancel(context.Background())
	defer evCancel()
	bcast := record.NewBroadcaster(record.WithContext(evCtx))
	bcast.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	defer bcast.Shutdown()
	rec := bcast.NewRecorder(scheme.Scheme, v1.EventSource{Component: "vip-agent", Host: c.nodeName})

	base, pw, err := c.bgpc.static()
	if err != nil {
		return err
	}
	sel, err := c.bgpc.selectors()
	if err != nil {
		return err
	}
	cfg := base
	var nw *nodeWatch
	if c.bgpc.annotations != "" || len(sel) > 0 {
		// Annotations and peer node selectors both depend on this Node.
		nodeClient, err := nodeWatchClient(c, client)
		if err != nil {
			return err
		}
		nw = newNodeWatch(nodeClient, c.nodeName, c.bgpc.annotations, base, pw, sel, log.WithName("bgp-node"), rec)
		if cfg, err = nw.start(ctx); err != nil {
			return err
		}
	} else if cfg, err = resolveBGP(base, pw, nil, nil, nil); err != nil {
		return fmt.Errorf("%w: %v", errConfig, err)
	}
	warnPlainPasswords(log, rec, c.nodeName, c.bgpc.plainPasswordSources(base.Peers))
	if unused := pw.Unused(cfg.Peers); len(unused) > 0 {
		log.Info("the password file has entries for addresses that are not peers", "peers", unused)
	}

	bindIface := c.servicesIface
	if bindIface == "" {
		bindIface = c.iface
	}
	node := nodeRef(c.nodeName)
	sp, err := bgp.New(ctx, bgp.Options{
		Config: cfg, Interface: bindIface, StatePath: c.statePath,
		Logger: log.WithName("bgp"), Registerer: reg,
		OnSessionChange: func(peer netip.Addr, up bool, state string) {
			if up {
				rec.Eventf(node, v1.EventTypeNormal, reasonSessionUp, "BGP session with %s established", peer)
				return
			}
			rec.Eventf(node, v1.EventTypeWarning, reasonSessionDown, "BGP session with %s went down (now %s); its routes from %s are withdrawn", peer, state, c.nodeName)
		},
	})
	if err != nil {
		if errors.Is(err, bgpconfig.ErrInvalid) {
			return fmt.Errorf("%w: %v", errConfig, err)
		}
		return fmt.Errorf("starting BGP: %w", err)
	}
	if err := sp.Cleanup(ctx); err != nil {
		log.Error(err, "removing addresses left by a previous run")
	}
	// The control-plane VIP starts before anything waits for the API: the
	// kubeconfig's server may be that VIP (kubeadm's admin.conf).
	stopCP, err := startControlPlane(ctx, c, sp, reg, log)
	if err != nil {
		_ = sp.Close()
		return err
	}
	defer stopCP()
	if nw != nil {
		go nw.follow(ctx, sp.Reconfigure)
	}

	ag, err := agent.New(agent.Options{
		Client: client, NodeName: c.nodeName, Mode: agent.ModeBGP,
		Class:     lbsvc.ClassRule{Name: c.className, Only: c.classOnly},
		Announcer: sp,
		// Service addresses go on the speaker's interface (lo unless
		// --interface says otherwise), not on the uplink.
		ConfigMapName: c.cmName, ConfigMapNamespace: c.cmNamespace, Namespace: c.namespace, ServicesNamespace: c.servicesNamespace,
		Workers: c.workers, Recorder: rec, Logger: log.WithName("services"), Registerer: reg,
	})
	if err != nil {
		_ = sp.Close()
		return fmt.Errorf("%w: %v", errConfig, err)
	}
	if c.metricsAddr != "" {
		m := http.NewServeMux()
		m.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		m.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
		m.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
			if !ag.Synced() {
				http.Error(w, "not ready", http.StatusServiceUnavailable)
				return
			}
			_, _ = w.Write([]byte("ok"))
		})
		addr, err := metricsListenAddr(c, rc.Host)
		if err == nil {
			var stop func()
			if stop, err = serveMetrics(addr, m); err == nil {
				defer stop()
			}
		}
		if err != nil {
			_ = sp.Close()
			return err
		}
	}
	log.Info("started", "node", c.nodeName, "mode", "bgp", "as", cfg.AS, "routerID", cfg.RouterID, "peers", len(cfg.Peers), "deselectedPeers", len(cfg.Deselected))
	runErr := ag.Run(ctx)
	stopCP() // the control-plane VIP is withdrawn before the speaker closes

	// Graceful stop: one withdrawal of every route and a NOTIFICATION to
	// every peer, so the routers drop this node at once; then the addresses
	// come off the interface. Nothing moves to another node in BGP mode, so
	// one Event on the Node says it rather than one per Service.
	t0 := time.Now()
	routes := len(sp.Advertised())
	if err := sp.Close(); err != nil {
		log.Error(err, "stopping BGP")
	}
	stopEvent(client, c.nodeName, fmt.Sprintf("vip-agent stopping: withdrew %d routes and closed the BGP sessions", routes), log)
	log.Info("stopped", "routes", routes, "took", time.Since(t0).String())
	return runErr
}

// stopEvent records the stop on the Node synchronously: the recorder's
// asynchronous sink would lose it when the process exits.
func stopEvent(client kubernetes.Interface, nodeName, msg string, log logr.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	now := metav1.Now()
	ev := &v1.Event{
		ObjectMeta:     metav1.ObjectMeta{GenerateName: nodeName + ".", Namespace: metav1.NamespaceDefault},
		InvolvedObject: *nodeRef(nodeName),
		Reason:         reasonStopped, Message: msg, Type: v1.EventTypeNormal,
		Source:         v1.EventSource{Component: "vip-agent", Host: nodeName},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
	}
	if _, err := client.CoreV1().Events(metav1.NamespaceDefault).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		log.V(1).Info("could not record the stop on the Node", "err", err.Error())
	}
}
