package election

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// vip_agent_heartbeat_age_seconds is computed when scraped: it is exact
// without any evaluation since, and a deleted heartbeat's node leaves it.
func TestHeartbeatAgeAtScrape(t *testing.T) {
	reg := prometheus.NewRegistry()
	u := newUnit(t, newFakeClient(), "a", func(o *Options) { o.Registerer = reg })
	u.ready()
	u.beat("b")
	u.beat("c")
	u.evaluate()
	u.clk.Step(300 * time.Millisecond)
	u.beat("a")
	ages := func() map[string]float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, mf := range mfs {
			if mf.GetName() != "vip_agent_heartbeat_age_seconds" {
				continue
			}
			for _, m := range mf.GetMetric() {
				out[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
			}
		}
		return out
	}
	got := ages()
	if len(got) != 3 || got["a"] != 0 || got["b"] != 0.3 || got["c"] != 0.3 {
		t.Fatalf("ages = %v, want a 0, b and c 0.3 (no evaluation since they were seen)", got)
	}
	u.onDelete(hbLease("c", "999", ""))
	if got := ages(); len(got) != 2 || got["b"] != 0.3 {
		t.Fatalf("after c's heartbeat was deleted: ages = %v, want a and b", got)
	}
}
