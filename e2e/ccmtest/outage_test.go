package ccmtest

import (
	"testing"
	"time"
)

// TestAPIServerOutage: after the API server has been away for 20 s, vip-ccm
// (its informers retry every 250 ms instead of backing off up to 30 s)
// addresses a Service created right after the server's return within
// seconds, and the Service addressed before the outage keeps its address.
func TestAPIServerOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("20 s API server outage")
	}
	h := New(t)
	cs := h.Admin
	ctx := tctx(t)
	h.SetPools(ctx, map[string]string{"cidr-global": "10.90.0.0/28"})
	ccm := h.StartCCM("vip-ccm", "--leader-elect=false", "--v=2")
	create(t, cs, LBService("default", "before"))
	before := waitIP(t, cs, "default", "before")

	if err := h.Env.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Second)
	restart := time.Now()
	if err := h.Env.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	// Until its authorizer has read the roles, a restarted API server
	// refuses vip-ccm's (immediately retried) requests.
	ccm.ExpectRBACDenials(restart, t0.Add(10*time.Second))
	create(t, cs, LBService("default", "after"))
	if _, err := WaitIngress(ctx, cs, "default", "after", 1, 8*time.Second); err != nil {
		t.Fatalf("Service created after the outage: no address within 8 s (client-go's reflector backoff?): %v", err)
	}
	t.Logf("Service created after a 20 s API server outage addressed in %v", time.Since(t0).Round(time.Millisecond))
	wantIP(t, cs, "default", "before", before)
	if exited, err := ccm.Exited(); exited {
		t.Fatalf("vip-ccm exited during the outage: %v", err)
	}
}
