package announce

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Values of the op label of vip_agent_announce_errors_total.
const (
	// OpAnnounce counts failed Announce calls.
	OpAnnounce = "announce"
	// OpWithdraw counts failed Withdraw calls.
	OpWithdraw = "withdraw"
	// OpRefresh counts failed Refresh calls.
	OpRefresh = "refresh"
	// OpCleanup counts failed Cleanup calls.
	OpCleanup = "cleanup"
	// OpClose counts failed Close calls.
	OpClose = "close"
	// OpBurst counts failures of the rounds sent after Announce or Refresh returned.
	OpBurst = "burst"
)

// metrics are the collectors of one Layer2.
type metrics struct {
	frames *prometheus.CounterVec
	errs   *prometheus.CounterVec
	bound  prometheus.GaugeFunc
	sent4  prometheus.Counter
	sent6  prometheus.Counter
	failed map[string]prometheus.Counter
}

// newMetrics builds the collectors and registers them on reg, if not nil.
func newMetrics(reg prometheus.Registerer, bound func() float64) (*metrics, error) {
	m := &metrics{
		frames: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vip_agent_announcement_frames_sent_total",
			Help: "Announcement frames written: gratuitous ARP (ipv4) and unsolicited neighbour advertisements (ipv6).",
		}, []string{"family"}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vip_agent_announce_errors_total",
			Help: "Failed layer-2 announcer operations by op.",
		}, []string{"op"}),
		bound: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "vip_agent_addresses_bound",
			Help: "Virtual IPs currently bound to an interface by this node.",
		}, bound),
		failed: map[string]prometheus.Counter{},
	}
	m.sent4 = m.frames.WithLabelValues("ipv4")
	m.sent6 = m.frames.WithLabelValues("ipv6")
	for _, op := range []string{OpAnnounce, OpWithdraw, OpRefresh, OpCleanup, OpClose, OpBurst} {
		m.failed[op] = m.errs.WithLabelValues(op)
	}
	if reg == nil {
		return m, nil
	}
	var done []prometheus.Collector
	for _, c := range []prometheus.Collector{m.frames, m.errs, m.bound} {
		if err := reg.Register(c); err != nil {
			for _, d := range done {
				reg.Unregister(d)
			}
			return nil, fmt.Errorf("registering announce metrics: %w", err)
		}
		done = append(done, c)
	}
	return m, nil
}

// fail counts one failure of op.
func (m *metrics) fail(op string) { m.failed[op].Inc() }
