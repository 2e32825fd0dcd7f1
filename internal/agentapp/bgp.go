package agentapp

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"k8s.io/client-go/kubernetes"

	"github.com/vip-lb/vip/pkg/agent"
	"github.com/vip-lb/vip/pkg/announce/bgp"
	"github.com/vip-lb/vip/pkg/bgpconfig"
	"github.com/vip-lb/vip/pkg/bgpnode"
	"github.com/vip-lb/vip/pkg/election"
	"github.com/vip-lb/vip/pkg/lbsvc"
)

// bgpPart is the BGP speaker and, when the Node supplies settings or
// labels for peer selectors, the watch that follows the Node.
type bgpPart struct {
	sp *bgp.Speaker
	nw *bgpnode.Watch
}

// startBGP starts the speaker with the configuration the flags give, laid
// over by this Node's annotations and labels when asked for (it waits for
// them to make a complete configuration, as kube-vip does).
func (a *app) startBGP(ctx context.Context) (*announcerPart, error) {
	c, log := a.cfg, a.log
	base, pw, err := c.Peering.Static()
	if err != nil {
		return nil, err
	}
	sel, err := c.Peering.Selectors()
	if err != nil {
		return nil, err
	}
	var nw *bgpnode.Watch
	cfg := base
	if c.Peering.Annotations != "" || len(sel) > 0 {
		// Annotations and peer node selectors both depend on this Node.
		nodeClient, err := a.nodeWatchClient()
		if err != nil {
			return nil, err
		}
		nw = bgpnode.New(bgpnode.Options{Client: nodeClient, Node: c.NodeName, Prefix: c.Peering.Annotations,
			Base: base, Passwords: pw, Selectors: sel, Logger: log.WithName("bgp-node"), Recorder: a.rec})
		if cfg, err = nw.Start(ctx); err != nil {
			return nil, err
		}
	} else if cfg, err = bgpconfig.Resolve(base, pw, nil, nil, nil); err != nil {
		return nil, configErr(err)
	}
	if c.Services {
		bgpnode.WarnPlainPasswords(log, a.rec, c.NodeName, c.Peering.PlainPasswordSources(base.Peers))
	}
	if unused := pw.Unused(cfg.Peers); len(unused) > 0 {
		log.Info("the password file has entries for addresses that are not peers", "peers", unused)
	}
	opts := bgp.Options{
		// Service addresses go on the speaker's interface (lo unless
		// --interface says otherwise), not on the uplink.
		Config: cfg, Interface: cmp.Or(c.ServicesInterface, c.Interface), StatePath: c.StatePath,
		Logger: log.WithName("bgp"), Registerer: a.reg,
	}
	if c.Services {
		opts.OnSessionChange = func(peer netip.Addr, up bool, state string) {
			bgpnode.SessionEvent(a.rec, c.NodeName, peer, up, state)
		}
	}
	sp, err := bgp.New(ctx, opts)
	if err != nil {
		if errors.Is(err, bgpconfig.ErrInvalid) {
			return nil, configErr(err)
		}
		return nil, fmt.Errorf("starting BGP: %w", err)
	}
	if err := sp.Cleanup(ctx); err != nil {
		log.Error(err, "removing addresses left by a previous run")
	}
	return &announcerPart{
		announcer: sp, bgp: &bgpPart{sp: sp, nw: nw},
		startedKV: []any{"mode", "bgp", "as", cfg.AS, "routerID", cfg.RouterID, "peers", len(cfg.Peers), "deselectedPeers", len(cfg.Deselected)},
		// One withdrawal of every route and a NOTIFICATION to every peer,
		// so the routers drop this node at once; then the addresses come
		// off the interface.
		close: func() {
			routes := len(sp.Advertised())
			if err := sp.Close(); err != nil {
				log.Error(err, "stopping BGP")
			}
			if c.Services {
				// Nothing moves to another node in BGP mode, so one Event
				// on the Node says it rather than one per Service.
				bgpnode.StopEvent(a.client, c.NodeName, fmt.Sprintf("vip-agent stopping: withdrew %d routes and closed the BGP sessions", routes), log)
			}
			log.Info("BGP stopped", "routes", routes)
		},
	}, nil
}

// nodeWatchClient is the client that reads this Node's BGP annotations and
// labels. With the control-plane VIP it talks to the node's own API server:
// the kubeconfig (kubeadm's admin.conf) may name the VIP, which is not up
// before the speaker has the settings from the Node, so going through the
// VIP would wait forever on a cold start.
func (a *app) nodeWatchClient() (kubernetes.Interface, error) {
	if !a.cfg.ControlPlane {
		return a.client, nil
	}
	return a.localClient()
}

// bgpServices is the Service controller of BGP mode: every eligible node
// advertises the Service addresses; Node changes reconfigure the speaker.
func (a *app) bgpServices(ctx context.Context, p *bgpPart) (*services, error) {
	c := a.cfg
	ag, err := agent.New(agent.Options{
		Client: a.client, NodeName: c.NodeName, Mode: agent.ModeBGP,
		Class:         lbsvc.ClassRule{Name: c.ClassName, Only: c.ClassOnly},
		Announcer:     p.sp,
		ConfigMapName: c.ConfigMapName, ConfigMapNamespace: c.ConfigMapNamespace, Namespace: c.Namespace, ServicesNamespace: c.ServicesNamespace,
		Workers: c.Workers, Recorder: a.rec, Logger: a.log.WithName("services"), Registerer: a.reg,
	})
	if err != nil {
		return nil, configErr(err)
	}
	return &services{
		ready: ag.Synced,
		start: func(ctx context.Context) error {
			if p.nw != nil {
				go p.nw.Follow(ctx, p.sp.Reconfigure)
			}
			// The node's addresses and gateways go on its Lease vip-node-<node>
			// for vip-ccm, as in layer 2 mode, written on change only.
			facts := election.NewFacts(election.FactsOptions{Client: a.client, Namespace: c.Namespace, NodeName: c.NodeName,
				Ready: ag.Synced, Logger: a.log.WithName("facts")})
			go facts.Run(ctx)
			go agent.PublishNodeInfo(ctx, nodeInfoPeriod, a.log.WithName("nodeinfo"),
				func(v netip.Addr) bool { return slices.Contains(p.sp.Advertised(), v) }, facts.Publish)
			return nil
		},
		run:  ag.Run,
		stop: func() {},
	}, nil
}
