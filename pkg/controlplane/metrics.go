package controlplane

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Controller's collectors; they are registered only when a
// Registerer is given.
type metrics struct {
	ready, leader, announced prometheus.Gauge
	denied                   prometheus.Gauge
	transitions              *prometheus.CounterVec
	addressChanges, errors   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vip_agent_controlplane_apiserver_ready",
			Help: "1 while this node's API server answers /readyz.",
		}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vip_agent_controlplane_leader",
			Help: "1 while this node holds the control-plane Lease.",
		}),
		announced: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vip_agent_controlplane_announced",
			Help: "1 while this node announces the control-plane VIP.",
		}),
		denied: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vip_agent_controlplane_credentials_denied",
			Help: "1 while the API server refuses this node's credentials for the control-plane Lease (Forbidden or Unauthorized).",
		}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vip_agent_controlplane_lease_transitions_total",
			Help: "Changes of this node's hold on the control-plane Lease, by reason (acquired, released, lost, renew-deadline).",
		}, []string{"reason"}),
		addressChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vip_agent_controlplane_address_changes_total",
			Help: "Times the control-plane address (a DNS name) resolved to a new VIP.",
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vip_agent_controlplane_errors_total",
			Help: "Failed announcements and DNS lookups of the control-plane VIP.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.ready, m.leader, m.announced, m.denied, m.transitions, m.addressChanges, m.errors} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering control-plane metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) transition(reason string) { m.transitions.WithLabelValues(reason).Inc() }
