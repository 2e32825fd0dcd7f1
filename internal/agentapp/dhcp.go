package agentapp

import (
	"context"
	"fmt"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"

	"github.com/vip-lb/vip/pkg/agent"
	"github.com/vip-lb/vip/pkg/agent/dhcpsource"
	"github.com/vip-lb/vip/pkg/dhcp"
)

// startDHCP builds the DHCP clients and the agent's DHCP plug-in (layer 2
// mode) and removes the macvlans a previous run left. service and enqueue
// reach the agent's Service cache and queue for the clients' lease events.
// The caller closes the manager on stop (leases are kept for the
// successors, the macvlans removed).
func startDHCP(ctx context.Context, client kubernetes.Interface, node string, reg prometheus.Registerer, rec record.EventRecorder,
	log logr.Logger, service func(key string) *v1.Service, enqueue func(key string)) (agent.AddressSource, *dhcp.Manager, error) {
	var src *dhcpsource.Source
	dm, err := dhcp.New(dhcp.Options{Logger: log, Registerer: reg,
		// src is set before any client runs (the agent starts them).
		OnEvent: func(key string, e dhcp.Event) { src.OnEvent(key, e) }})
	if err != nil {
		return nil, nil, fmt.Errorf("starting the DHCP client: %w", err)
	}
	if err := dm.Cleanup(ctx); err != nil {
		log.Error(err, "removing macvlans left by a previous run")
	}
	src = dhcpsource.New(dhcpsource.Options{Client: client, Clients: dm, NodeName: node,
		Service: service, Enqueue: enqueue, Recorder: rec, Logger: log})
	return src, dm, nil
}
