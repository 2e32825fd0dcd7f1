package bgp

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Values of the op label of vip_agent_bgp_errors_total.
const (
	OpAnnounce    = "announce"
	OpWithdraw    = "withdraw"
	OpReconfigure = "reconfigure"
	OpClose       = "close"
)

// metrics are the collectors of one Speaker.
type metrics struct {
	up    *prometheus.GaugeVec
	paths prometheus.Gauge
	errs  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vip_agent_bgp_session_up",
			Help: "1 when the BGP session with the peer is established, else 0.",
		}, []string{"peer"}),
		paths: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vip_agent_bgp_paths_advertised",
			Help: "Host routes (one per virtual IP) this node originates to its BGP peers.",
		}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vip_agent_bgp_errors_total",
			Help: "Failed BGP announcer operations by op.",
		}, []string{"op"}),
	}
	for _, op := range []string{OpAnnounce, OpWithdraw, OpReconfigure, OpClose} {
		m.errs.WithLabelValues(op)
	}
	if reg == nil {
		return m, nil
	}
	var done []prometheus.Collector
	for _, c := range []prometheus.Collector{m.up, m.paths, m.errs} {
		if err := reg.Register(c); err != nil {
			for _, d := range done {
				reg.Unregister(d)
			}
			return nil, fmt.Errorf("registering BGP metrics: %w", err)
		}
		done = append(done, c)
	}
	return m, nil
}

func (m *metrics) fail(op string) { m.errs.WithLabelValues(op).Inc() }
