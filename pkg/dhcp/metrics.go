package dhcp

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	held     prometheus.Gauge
	obtained prometheus.Counter
	extended prometheus.Counter
	failures *prometheus.CounterVec
	lost     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		held: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vip_agent_dhcp_leases", Help: "DHCP leases currently held by this node."}),
		obtained: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vip_agent_dhcp_leases_obtained_total", Help: "DHCP leases obtained (DISCOVER to ACK)."}),
		extended: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vip_agent_dhcp_renewals_total", Help: "DHCP leases renewed or rebound."}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vip_agent_dhcp_failures_total", Help: "Failed DHCP exchanges by action (acquire, renew, rebind)."},
			[]string{"action"}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vip_agent_dhcp_leases_lost_total", Help: "DHCP leases that expired or were refused while held."}),
	}
	if reg != nil {
		reg.MustRegister(m.held, m.obtained, m.extended, m.failures, m.lost)
	}
	return m
}
