package upnp

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	mappings prometheus.Gauge
	calls    *prometheus.CounterVec
	failures *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		mappings: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vip_agent_upnp_mappings", Help: "Port mappings this node holds on the UPnP gateway."}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vip_agent_upnp_calls_total", Help: "UPnP gateway calls by operation."}, []string{"op"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vip_agent_upnp_failures_total", Help: "Failed UPnP gateway calls by operation (retried with backoff)."}, []string{"op"}),
	}
	if reg != nil {
		reg.MustRegister(m.mappings, m.calls, m.failures)
	}
	return m
}

func (m *metrics) call(op string, err error) {
	m.calls.WithLabelValues(op).Inc()
	if err != nil && !errors.Is(err, ErrNoSuchEntry) {
		m.failures.WithLabelValues(op).Inc()
	}
}
