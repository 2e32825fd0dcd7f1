package main

import (
	"context"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/vip-lb/vip/pkg/agent"
	"github.com/vip-lb/vip/pkg/upnp"
)

// upnpConfig is the UPnP part of the configuration (docs/upnp.md).
type upnpConfig struct {
	enabled     bool
	allServices bool
	lease       time.Duration
	window      time.Duration
}

func defaultUPnPConfig() upnpConfig {
	return upnpConfig{lease: time.Hour, window: 2 * time.Second}
}

func (u *upnpConfig) flags(fs *pflag.FlagSet) {
	fs.BoolVar(&u.enabled, "enableUPNP", u.enabled, "Forward the ports of the Services this node announces on the network's UPnP Internet gateway (env enableUPNP); a Service opts in with kube-vip.io/forwardUPNP: \"true\". ARP mode only.")
	fs.BoolVar(&u.allServices, "upnp-all-services", u.allServices, "With --enableUPNP, forward every announced Service, not only the annotated ones.")
	fs.DurationVar(&u.lease, "upnp-lease-duration", u.lease, "Lease of each gateway port mapping, renewed at half of it; 0 asks for permanent mappings (per Service: kube-vip.io/upnp-lease-duration).")
	fs.DurationVar(&u.window, "upnp-discovery-window", u.window, "How long an SSDP search for the gateway collects answers.")
}

// upnpEnvFlags maps kube-vip's environment variable (and the spelling of
// its other settings) onto the flag.
var upnpEnvFlags = map[string]string{"enableUPNP": "enableUPNP", "enable_upnp": "enableUPNP"}

func (u *upnpConfig) validate(c *config) error {
	if !u.enabled {
		return nil
	}
	switch {
	case c.bgp:
		return fmt.Errorf("%w: --enableUPNP (enableUPNP) works with --arp only: in BGP mode every node announces the address, and one gateway port can be forwarded for one node only", errConfig)
	case !c.services:
		return fmt.Errorf("%w: --enableUPNP (enableUPNP) forwards Service ports, but --services=false (svc_enable=false)", errConfig)
	case u.lease < 0:
		return fmt.Errorf("%w: --upnp-lease-duration %v is negative", errConfig, u.lease)
	case u.window <= 0:
		return fmt.Errorf("%w: --upnp-discovery-window must be positive", errConfig)
	}
	return nil
}

// startUPnP starts the port mapper when UPnP is on. report receives the
// mapper's outcomes per Service key; stop ends the mapper, which removes
// every mapping it holds, and waits for it.
func startUPnP(ctx context.Context, c config, reg prometheus.Registerer, log logr.Logger,
	report func(key string, warning bool, reason, msg string)) (agent.PortMapOptions, func(), error) {
	if !c.upnp.enabled {
		return agent.PortMapOptions{}, func() {}, nil
	}
	iface := c.servicesIface
	if iface == "" {
		iface = c.iface
	}
	m, err := upnp.New(upnp.Options{
		Discover:    upnp.SSDP(upnp.SSDPOptions{Interface: iface, Window: c.upnp.window}),
		Description: "vip " + c.nodeName,
		Reporter:    upnp.ReporterFunc(report),
		Logger:      log, Registerer: reg,
	})
	if err != nil {
		return agent.PortMapOptions{}, nil, fmt.Errorf("%w: %v", errConfig, err)
	}
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = m.Run(mctx)
	}()
	log.Info("UPnP port mapping on", "iface", iface, "allServices", c.upnp.allServices, "lease", c.upnp.lease)
	stop := func() {
		cancel()
		<-done
	}
	return agent.PortMapOptions{Mapper: m, AllServices: c.upnp.allServices, Lease: c.upnp.lease}, stop, nil
}
