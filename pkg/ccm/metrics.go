package ccm

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vip-lb/vip/pkg/ipam"
)

// metrics are vip-ccm's own Prometheus metrics.
type metrics struct {
	allocations  prometheus.Counter
	failures     *prometheus.CounterVec
	configErrors prometheus.Gauge
	poolSize     *prometheus.GaugeVec
	ensure       prometheus.Histogram
	lb           *LoadBalancer
	poolUsed     *prometheus.Desc
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		allocations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vip_ccm_allocations_total", Help: "Services that were given addresses."}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vip_ccm_allocation_failures_total", Help: "Failed address assignments by Event reason."}, []string{"reason"}),
		configErrors: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vip_ccm_pool_config_errors", Help: "Invalid entries in the pools ConfigMap (ignored; last good values kept)."}),
		poolSize: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vip_ccm_pool_size", Help: "Addresses in each pool (ConfigMap key)."}, []string{"pool", "family"}),
		ensure: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "vip_ccm_ensure_duration_seconds", Help: "Duration of EnsureLoadBalancer calls.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 8)}),
		poolUsed: prometheus.NewDesc("vip_ccm_pool_used", "Addresses in use in each pool (ConfigMap key).", []string{"pool"}, nil),
	}
	if reg != nil {
		reg.MustRegister(m.allocations, m.failures, m.configErrors, m.poolSize, m.ensure, usedCollector{m})
	}
	return m
}

func (m *metrics) observe(lb *LoadBalancer) { m.lb = lb }

func (m *metrics) ensureDone(start time.Time, _ error) {
	m.ensure.Observe(time.Since(start).Seconds())
}

func (m *metrics) setPools(cfg *ipam.Config) {
	m.poolSize.Reset()
	for _, p := range cfg.Pools() {
		m.poolSize.WithLabelValues(p.Name, p.Family.String()).Set(p.Size)
	}
}

// usedCollector reads pool usage at scrape time.
type usedCollector struct{ m *metrics }

func (u usedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- u.m.poolUsed }

func (u usedCollector) Collect(ch chan<- prometheus.Metric) {
	lb := u.m.lb
	if lb == nil {
		return
	}
	lb.mu.Lock()
	defer lb.mu.Unlock()
	if lb.cfg == nil {
		return
	}
	for _, p := range lb.cfg.Pools() {
		ch <- prometheus.MustNewConstMetric(u.m.poolUsed, prometheus.GaugeValue, float64(lb.alloc.Used(p.Name)), p.Name)
	}
}
