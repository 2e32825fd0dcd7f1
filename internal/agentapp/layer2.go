package agentapp

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	v1 "k8s.io/api/core/v1"

	"github.com/vip-lb/vip/pkg/agent"
	"github.com/vip-lb/vip/pkg/announce"
	"github.com/vip-lb/vip/pkg/announce/probe"
	"github.com/vip-lb/vip/pkg/election"
	"github.com/vip-lb/vip/pkg/lbsvc"
)

// layer2Part is the ARP/NDP announcer.
type layer2Part struct{ l2 *announce.Layer2 }

// nodeInfoPeriod is how often the node's addresses are read for the
// heartbeat annotations.
const nodeInfoPeriod = 10 * time.Second

// startLayer2 opens the ARP/NDP announcer and removes the addresses a
// previous run left bound (from the state file).
func (a *app) startLayer2(ctx context.Context) (*announcerPart, error) {
	c := a.cfg
	l2, err := announce.NewLayer2(announce.Options{
		Logger: a.log.WithName("announce"), Registerer: a.reg, StatePath: c.StatePath,
		Count: c.GARPCount, Interval: c.GARPInterval,
	})
	if err != nil {
		return nil, fmt.Errorf("starting announcer: %w", err)
	}
	if err := l2.Cleanup(ctx); err != nil {
		a.log.Error(err, "removing addresses left by a previous run")
	}
	return &announcerPart{
		announcer: l2, l2: &layer2Part{l2},
		startedKV: []any{"mode", "arp"},
		close: func() {
			if err := l2.Close(); err != nil {
				a.log.Error(err, "removing addresses")
			}
		},
	}, nil
}

// layer2Services is the Service controller of ARP mode: per-address
// election on node heartbeats and the election health endpoint peers probe,
// with the plug-ins layer 2 mode adds to the core reconcile: DHCP-obtained
// addresses (always) and UPnP port forwarding (enableUPNP).
func (a *app) layer2Services(ctx context.Context, p *layer2Part) (*services, error) {
	c, log, l2 := a.cfg, a.log, p.l2
	var ag *agent.Agent
	// The plug-ins reach the agent's Service cache and queue once it
	// exists; they are called only after it runs.
	service := func(key string) *v1.Service {
		if ag == nil {
			return nil
		}
		return ag.Service(key)
	}
	forwarder, stopUPnP, err := startUPnP(ctx, c, a.reg, a.rec, log.WithName("upnp"), service)
	if err != nil {
		return nil, err
	}
	source, dm, err := startDHCP(ctx, a.client, c.NodeName, a.reg, a.rec, log.WithName("dhcp"), service, func(key string) {
		if ag != nil {
			ag.Enqueue(key)
		}
	})
	if err != nil {
		stopUPnP()
		return nil, err
	}
	// Node addresses gate the election health endpoint both ways; its
	// informer syncs before the election runs (start).
	nodes := newNodeAddresses(a.client)
	health := healthURL(c, a.listen, a.rc.Host)
	link, err := startLink(c, log.WithName("liveness"))
	if err != nil {
		stopUPnP()
		return nil, err
	}
	eo := election.Options{
		PeerAddressAllowed: nodes.Allowed,
		Client:             a.client, Namespace: c.Namespace, NodeName: c.NodeName,
		HeartbeatPeriod: c.HeartbeatPeriod, HeartbeatTimeout: c.HeartbeatTimeout,
		Logger: log.WithName("election"), Registerer: a.reg, Recorder: a.rec,
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
		HealthAddress: health, Rebalance: c.Rebalance, SettleTime: c.Settle,
		// Candidates are only nodes whose agent has synced: one that cannot
		// (missing RBAC) must not win addresses it would never announce.
		Ready: func() bool { return ag != nil && ag.Synced() },
	}
	link.options(&eo)
	el, err := election.New(eo)
	if err != nil {
		stopUPnP()
		return nil, configErr(fmt.Errorf("election: %w", err))
	}
	ag, err = agent.New(agent.Options{
		Client: a.client, NodeName: c.NodeName, Mode: agent.ModeARP,
		Class:     lbsvc.ClassRule{Name: c.ClassName, Only: c.ClassOnly},
		Announcer: l2, Elector: agent.FromElection(el), Prober: newProber(c.ProbeTimeout, l2), NodeWithMAC: el.NodeWithMAC,
		Source: source, Forwarder: forwarder,
		Interface: c.Interface, ServicesInterface: c.ServicesInterface, AllowedInterfaces: c.AllowedInterfaces,
		ServicesNamespace: c.ServicesNamespace,
		ConfigMapName:     c.ConfigMapName, ConfigMapNamespace: c.ConfigMapNamespace, Namespace: c.Namespace,
		Workers: c.Workers, Recorder: a.rec, Logger: log.WithName("services"), Registerer: a.reg,
	})
	if err != nil {
		stopUPnP()
		return nil, configErr(err)
	}
	elCtx, elCancel := context.WithCancel(context.Background())
	elDone := make(chan error, 1)
	return &services{
		ready:    func() bool { return ag.Synced() && !el.Fenced() },
		election: fromNodes(nodes.Allowed, el.HealthHandler(), log),
		start: func(ctx context.Context) error {
			if err := nodes.start(ctx); err != nil {
				return err
			}
			go func() { elDone <- el.Run(elCtx) }()
			link.run(elCtx, el) // stops after the hand-off, with the Elector
			if !el.WaitForSync(ctx) {
				elCancel()
				return fmt.Errorf("election informers did not sync: %w", ctx.Err())
			}
			log.Info("election running", "liveness", c.Liveness.Mode, "heartbeatPeriod", c.HeartbeatPeriod, "heartbeatTimeout", c.HeartbeatTimeout, "health", health)
			// The node's addresses and gateways go on the heartbeat for
			// vip-ccm, which never hands them out; the addresses vip binds
			// are not among them.
			go agent.PublishNodeInfo(ctx, nodeInfoPeriod, log.WithName("nodeinfo"),
				func(a netip.Addr) bool { return slices.Contains(l2.Held(), a) }, el.Publish)
			return nil
		},
		run: ag.Run,
		// Graceful stop, make before break (pkg/agent/handoff.go): the
		// Leases go to their successors, which announce at once instead of
		// waiting for the heartbeat to go stale; each address stays bound
		// here until its successor says it announced it, so no client
		// packet is dropped. DHCP addresses (a MAC of their own) go first.
		// The gateway's port mappings go last.
		stop: func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			ag.WithdrawSourced(sctx)
			_ = dm.Close() // leases kept for the successors; macvlans removed before the hand-off
			marks := ag.BeginStop(sctx)
			if err := el.Shutdown(sctx); err != nil {
				log.Error(err, "handing Leases off")
			}
			ag.AwaitSuccessors(sctx, marks)
			ag.WithdrawEverything(sctx)
			elCancel()
			<-elDone
			stopUPnP()
		},
	}, nil
}

// newProber probes addresses before their first announcement (nil when
// --address-probe-timeout is 0).
func newProber(timeout time.Duration, l2 *announce.Layer2) agent.Prober {
	if timeout <= 0 {
		return nil
	}
	return probe.New(probe.Options{Timeout: timeout, InterfaceFor: l2.InterfaceFor})
}
