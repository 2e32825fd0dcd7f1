package agentapp

import (
	"cmp"
	"context"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/vip-lb/vip/pkg/agent"
	"github.com/vip-lb/vip/pkg/agent/upnpforward"
	"github.com/vip-lb/vip/pkg/agentconfig"
	"github.com/vip-lb/vip/pkg/upnp"
)

// startUPnP starts the port mapper and returns the agent's UPnP plug-in when
// UPnP is on (nil otherwise). service looks a Service key up in the agent's
// cache, for the mapper's Events; stop ends the mapper, which removes every
// mapping it holds, and waits for it.
func startUPnP(ctx context.Context, c agentconfig.Config, reg prometheus.Registerer, rec record.EventRecorder, log logr.Logger,
	service func(key string) *v1.Service) (agent.Forwarder, func(), error) {
	if !c.UPnP.Enabled {
		return nil, func() {}, nil
	}
	iface := cmp.Or(c.ServicesInterface, c.Interface)
	var fw *upnpforward.Forwarder
	m, err := upnp.New(upnp.Options{
		Discover:    upnp.SSDP(upnp.SSDPOptions{Interface: iface, Window: c.UPnP.Window}),
		Description: "vip " + c.NodeName,
		// fw is set before the mapper runs.
		Reporter: upnp.ReporterFunc(func(key string, warning bool, reason, msg string) { fw.Report(key, warning, reason, msg) }),
		Logger:   log, Registerer: reg,
	})
	if err != nil {
		return nil, nil, configErr(err)
	}
	fw = upnpforward.New(upnpforward.Options{Mapper: m, AllServices: c.UPnP.AllServices, Lease: c.UPnP.Lease,
		Service: service, Recorder: rec, Logger: log.WithValues("node", c.NodeName)})
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
	return fw, stop, nil
}
