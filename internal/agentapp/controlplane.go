package agentapp

import (
	"context"
	"fmt"

	"github.com/vip-lb/vip/pkg/announce"
	"github.com/vip-lb/vip/pkg/controlplane"
	"github.com/vip-lb/vip/pkg/dhcp"
)

// controlPlanePart is the running control-plane VIP (or nothing without
// --controlplane).
type controlPlanePart struct {
	done chan struct{}
	err  error
	// stop withdraws the VIP and releases the Lease; it may be called
	// more than once.
	stop func()
}

// wait returns when ctx ends or the controller stops on its own, with its
// error.
func (p *controlPlanePart) wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
	case <-p.done:
	}
	p.stop()
	return p.err
}

// startControlPlane runs the control-plane VIP on ann when --controlplane
// is set.
func (a *app) startControlPlane(ctx context.Context, ann announce.Announcer) (*controlPlanePart, error) {
	p := &controlPlanePart{done: make(chan struct{})}
	if !a.cfg.ControlPlane {
		close(p.done)
		p.stop = func() {}
		return p, nil
	}
	ctl, err := a.newControlPlane(ann)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		defer close(p.done)
		p.err = ctl.Run(ctx)
	}()
	p.stop = func() { cancel(); <-p.done }
	return p, nil
}

// newControlPlane builds the control-plane VIP's controller: it elects
// through this node's own API server, never through the VIP.
func (a *app) newControlPlane(ann announce.Announcer) (*controlplane.Controller, error) {
	c, log := a.cfg, a.log
	client, err := a.localClient()
	if err != nil {
		return nil, err
	}
	local, _ := c.CP.LocalURL() // checked by Validate
	iface := c.Interface
	if c.BGP {
		iface = "" // the speaker's own interface (lo by default)
	}
	var ddns controlplane.DDNS
	if c.CP.DDNS {
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
	switch c.CP.CIDR {
	case "", "32", "128", "/32", "/128":
	default:
		log.Info("vip_cidr is ignored: the control-plane VIP is bound as a host address", "vip_cidr", c.CP.CIDR)
	}
	ctl, err := controlplane.New(controlplane.Options{
		Client: client, Namespace: c.Namespace, LeaseName: c.CP.LeaseName, Identity: c.NodeName,
		Address: c.CP.Address, Interface: iface, Announcer: ann,
		EveryReadyNode: c.BGP && !c.LeaderElection,
		LeaseDuration:  c.LeaseDuration, RenewDeadline: c.RenewDeadline, RetryPeriod: c.RetryPeriod,
		ProbePeriod: c.CP.ProbePeriod, ProbeTimeout: c.CP.ProbeTimeout, ResolvePeriod: c.CP.ResolvePeriod,
		Logger: log.WithName("control-plane"), Registerer: a.reg,
		DDNS: ddns, DDNSInterface: c.Interface,
	})
	if err != nil {
		return nil, configErr(err)
	}
	log.Info("control-plane VIP enabled", "address", c.CP.Address, "localAPIServer", local,
		"lease", c.Namespace+"/"+c.CP.LeaseName)
	return ctl, nil
}
