//go:build e2e

package e2e

import (
	"testing"
	"time"

	"github.com/vip-lb/vip/e2e/lab"
)

// noReadyEndpoints: the responders' endpoints turn not ready: the address is
// withdrawn (bound nowhere) with a NoReadyEndpoints Warning; one endpoint
// ready again brings it back on one node, reachable from the client.
func (s *l2Suite) noReadyEndpoints(t *testing.T) {
	l := s.l
	svcs := l2Create(t, l, "default", []string{"noep"})
	defer l2DeleteAll(t, l, svcs)
	sv := svcs[0]
	h := l2Holders(t, l, svcs)
	l2CheckServed(t, l, svcs, h, "")
	ctx := l2Ctx(t, time.Minute)
	if err := l.SetEndpointsReady(ctx, sv.NS, sv.Name, false, "node1", "node2", "node3"); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := l.WaitBound(ctx, sv.VIP); err != nil {
		t.Fatalf("endpoints not ready: %v", err)
	}
	t.Logf("endpoints not ready: %s withdrawn from %s in %v", sv.VIP, h[sv.Name], time.Since(t0).Round(time.Millisecond))
	if err := lab.Poll(ctx, 50*time.Millisecond, func() (bool, error) {
		return len(l2Events(t, l, sv, "NoReadyEndpoints")) > 0, nil
	}); err != nil {
		t.Fatalf("no NoReadyEndpoints Event: %v", err)
	}
	if err := l.SetEndpointsReady(ctx, sv.NS, sv.Name, true, "node3"); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	now, err := l.WaitHolder(ctx, sv.NS, sv.Name, func(h string) bool { return h != "" })
	if err != nil {
		t.Fatal(err)
	}
	l2CheckServed(t, l, svcs, map[string]string{sv.Name: now}, "")
	t.Logf("one endpoint ready again: %s announced from %s and reached in %v", sv.VIP, now, time.Since(t0).Round(time.Millisecond))
}
