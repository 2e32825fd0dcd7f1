package election

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// ageCollector computes vip_agent_heartbeat_age_seconds when it is
// scraped. A gauge per node set at every evaluation (20 times a second)
// cost each agent O(nodes) metric updates 20 times a second for a value
// read every few seconds at most: at 100 nodes it was the largest part of
// an idle agent's CPU.
type ageCollector struct {
	desc *prometheus.Desc
	e    atomic.Pointer[Elector]
}

// newAgeCollector builds the collector; it reports nothing until its
// Elector is set.
func newAgeCollector() *ageCollector {
	return &ageCollector{desc: prometheus.NewDesc("vip_agent_heartbeat_age_seconds",
		"Time since this observer last saw each node's heartbeat change, on its own clock.", []string{"node"}, nil)}
}

// Describe implements prometheus.Collector.
func (c *ageCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector: the age of every node whose
// heartbeat this node sees (ageLocked), at the time of the scrape.
func (c *ageCollector) Collect(ch chan<- prometheus.Metric) {
	e := c.e.Load()
	if e == nil {
		return
	}
	now := e.o.Clock.Now()
	e.mu.Lock()
	ages := make(map[string]float64, len(e.nodes))
	for node, st := range e.nodes {
		if !st.gone {
			ages[node] = e.ageLocked(node, st, now).Seconds()
		}
	}
	e.mu.Unlock()
	for node, age := range ages {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, age, node)
	}
}
