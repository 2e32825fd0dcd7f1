package agent

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	held          prometheus.Gauge
	reconciles    *prometheus.CounterVec
	reconcileTime prometheus.Histogram
	probeTime     prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		held: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vip_agent_service_addresses_announced", Help: "Service addresses this node announces."}),
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vip_agent_reconciles_total", Help: "Service reconciles by result."}, []string{"result"}),
		reconcileTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "vip_agent_reconcile_duration_seconds", Help: "Duration of one Service reconcile.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 8)}),
		probeTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "vip_agent_address_probe_duration_seconds", Help: "Time the probe before a first announcement took (ARP probe / DAD-style NS).",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 8)}),
	}
	if reg != nil {
		reg.MustRegister(m.held, m.reconciles, m.reconcileTime, m.probeTime)
	}
	return m
}

func (m *metrics) reconciled(d time.Duration, err error) {
	m.reconcileTime.Observe(d.Seconds())
	if err != nil {
		m.reconciles.WithLabelValues("error").Inc()
		return
	}
	m.reconciles.WithLabelValues("ok").Inc()
}

func (m *metrics) setHeld(n int) { m.held.Set(float64(n)) }

func (m *metrics) probe(d time.Duration) { m.probeTime.Observe(d.Seconds()) }
