package election

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Operation labels of vip_agent_election_errors_total.
const (
	opHeartbeat = "heartbeat"
	opCreate    = "create"
	opUpdate    = "update"
	opRelease   = "release"
	opDelete    = "delete"
	opGet       = "get"
	opProbe     = "probe"
)

// Kind labels of vip_agent_lease_writes_total.
const (
	writeHeartbeat = "heartbeat"
	writeService   = "service"
)

// metrics are the Elector's collectors; they are registered only when a
// Registerer is given.
type metrics struct {
	leasesHeld prometheus.Gauge
	takeovers  prometheus.Counter
	errors     *prometheus.CounterVec
	fenced     prometheus.Gauge
	fences     prometheus.Counter
	writes     *prometheus.CounterVec
	linkSilent prometheus.Gauge
	linkBadKey prometheus.Counter
}

// newMetrics builds the collectors and registers them, and extra ones,
// with reg (nil = none).
func newMetrics(reg prometheus.Registerer, extra ...prometheus.Collector) (*metrics, error) {
	m := &metrics{
		leasesHeld: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vip_agent_leases_held", Help: "Service Leases held by this node."}),
		takeovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vip_agent_lease_takeovers_total", Help: "Service Leases taken over from a node whose heartbeat went stale."}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vip_agent_election_errors_total", Help: "Failed election operations by operation."}, []string{"op"}),
		fenced: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vip_agent_fenced", Help: "1 while this node has fenced itself (cannot renew its heartbeat)."}),
		fences: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vip_agent_fences_total", Help: "Times this node fenced itself (stopped announcing because it could not renew its heartbeat)."}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vip_agent_lease_writes_total", Help: "Lease writes sent to the API server by kind (heartbeat, service)."}, []string{"kind"}),
		linkSilent: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vip_agent_link_silent", Help: "1 while no node hears its peers on the link (--liveness=link): nodes are judged by their heartbeat Lease renewals and none fences for silence."}),
		linkBadKey: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vip_agent_link_auth_failures_total", Help: "Datagrams on the link port from a member's link address that failed authentication (agents holding different keys); ignored."}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range append([]prometheus.Collector{m.leasesHeld, m.takeovers, m.errors, m.fenced, m.fences, m.writes, m.linkSilent, m.linkBadKey}, extra...) {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering election metrics: %w", err)
		}
	}
	return m, nil
}
