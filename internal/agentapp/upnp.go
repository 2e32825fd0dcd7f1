package agentapp

import (
	"cmp"
	"context"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vip-lb/vip/pkg/agent"
	"github.com/vip-lb/vip/pkg/agentconfig"
	"github.com/vip-lb/vip/pkg/upnp"
)

// startUPnP starts the port mapper when UPnP is on. report receives the
// mapper's outcomes per Service key; stop ends the mapper, which removes
// every mapping it holds, and waits for it.
func startUPnP(ctx context.Context, c agentconfig.Config, reg prometheus.Registerer, log logr.Logger,
	report func(key string, warning bool, reason, msg string)) (agent.PortMapOptions, func(), error) {
	if !c.UPnP.Enabled {
		return agent.PortMapOptions{}, func() {}, nil
	}
	iface := cmp.Or(c.ServicesInterface, c.Interface)
	m, err := upnp.New(upnp.Options{
		Discover:    upnp.SSDP(upnp.SSDPOptions{Interface: iface, Window: c.UPnP.Window}),
		Description: "vip " + c.NodeName,
		Reporter:    upnp.ReporterFunc(report),
		Logger:      log, Registerer: reg,
	})
	if err != nil {
		return agent.PortMapOptions{}, nil, configErr(err)
	}
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = m.Run(mctx)
	}()
	log.Info("UPnP port mapping on", "iface", iface, "allServices", c.UPnP.AllServices, "lease", c.UPnP.Lease)
	if !c.UPnP.AllServices {
		// kube-vip's older docs expose every Service once enableUPNP is
		// set; vip forwards only what a Service asks for and its namespace
		// may have, so say how a Service gets forwarded.
		log.Info(`UPnP forwards only Services annotated kube-vip.io/forwardUPNP: "true" in namespaces with allow-upnp-<namespace> (or allow-upnp-global) in the pools ConfigMap; --upnp-all-services forwards every announced Service`)
	}
	stop := func() {
		cancel()
		<-done
	}
	return agent.PortMapOptions{Mapper: m, AllServices: c.UPnP.AllServices, Lease: c.UPnP.Lease}, stop, nil
}
