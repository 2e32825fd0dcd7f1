package ccmtest

import (
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vip-lb/vip/pkg/lbsvc"
)

// TestOneStatusWriter: vip's own service controller is the only controller
// writing Service status. The stock service controller never starts; the
// controller name "service" (alias of service-lb-controller) turns vip's
// controller off and on; it serves unclassed and classed Services with the
// stock controller's finalizer and Events (component service-controller),
// and a deletion or a type change releases the address.
func TestOneStatusWriter(t *testing.T) {
	h := New(t)
	cs := h.Admin
	ctx := tctx(t)
	h.SetPools(ctx, map[string]string{"cidr-global": "10.76.0.0/30", "allow-static-outside-pools": "false"})
	class := lbsvc.DefaultLoadBalancerClass
	args := []string{"--leader-elect=false", "--retry-after=2s", "--load-balancer-class=" + class}
	queues := func(c *CCM) (vip, stock bool) {
		body := scrape(t, h, c, "/metrics", h.Env.AdminToken(), 200)
		return strings.Contains(body, `workqueue_adds_total{name="vip-service"}`), strings.Contains(body, `workqueue_adds_total{name="service"}`)
	}
	// No stock controller: its start line and its work queue never appear.
	noStock := func(c *CCM) {
		t.Helper()
		if c.LogContains("Starting service controller") {
			t.Errorf("%s started the stock service controller", c.Name)
		}
		if _, stock := queues(c); stock {
			t.Errorf("%s has the stock service controller's work queue", c.Name)
		}
	}

	// --controllers=*,-service: no service controller at all.
	off := h.StartCCM("ccm-off", append(args, "--controllers=*,-service")...)
	waitFor(t, "ccm-off skips the service controller and starts the cloud-node one", func() bool {
		return off.LogContains(`"service-lb-controller" is disabled`) && off.LogContains(`Started "cloud-node-controller"`)
	})
	create(t, cs, LBService("writer", "early"))
	if vip, _ := queues(off); vip {
		t.Error("ccm-off runs vip's service controller")
	}
	noStock(off)
	if svc, err := cs.CoreV1().Services("writer").Get(ctx, "early", metav1.GetOptions{}); err != nil || len(svc.Finalizers) != 0 || len(svc.Status.LoadBalancer.Ingress) != 0 {
		t.Errorf("early was served with the service controller off: %v %v", svc, err)
	}
	off.Kill()

	on := h.StartCCM("ccm-on", args...)
	waitFor(t, "ccm-on starts vip's service controller", func() bool { return on.LogContains(`Started "service-lb-controller"`) })
	early := waitIP(t, cs, "writer", "early")
	create(t, cs, LBService("writer", "classed", WithClass(class)))
	waitIP(t, cs, "writer", "classed")
	if vip, _ := queues(on); !vip {
		t.Error("ccm-on has no vip-service work queue")
	}
	noStock(on)
	for _, name := range []string{"early", "classed"} {
		svc, err := cs.CoreV1().Services("writer").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(svc.Finalizers, finalizer) {
			t.Errorf("%s has no %s finalizer: %v", name, finalizer, svc.Finalizers)
		}
		waitEvent(t, cs, "writer", "Service", name, v1.EventTypeNormal, "AddressAllocated")
		// Informational Events are left out without --all-service-events.
		if evs, err := Events(ctx, cs, "writer", "Service", name, "EnsuredLoadBalancer"); err != nil || len(evs) != 0 {
			t.Errorf("%s: EnsuredLoadBalancer Events %v (%v) without --all-service-events", name, evs, err)
		}
	}

	// Deletion: the stock controller's Events, the finalizer goes, the
	// address is released (the next Service gets it).
	deleteSvc(t, cs, "writer", "early")
	for _, reason := range []string{"DeletingLoadBalancer", "DeletedLoadBalancer"} {
		if ev := waitEvent(t, cs, "writer", "Service", "early", v1.EventTypeNormal, reason); ev.Source.Component != "service-controller" {
			t.Errorf("%s recorded by %q, want service-controller", reason, ev.Source.Component)
		}
	}
	create(t, cs, LBService("writer", "next"))
	if got := waitIP(t, cs, "writer", "next"); got != early {
		t.Errorf("next got %s, want the released %s", got, early)
	}

	// Type change away from LoadBalancer: status and finalizer go.
	svc, err := cs.CoreV1().Services("writer").Get(ctx, "classed", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc.Spec.Type = v1.ServiceTypeClusterIP
	if _, err := cs.CoreV1().Services("writer").Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "classed loses its finalizer and status", func() bool {
		s, err := cs.CoreV1().Services("writer").Get(ctx, "classed", metav1.GetOptions{})
		return err == nil && !slices.Contains(s.Finalizers, finalizer) && len(s.Status.LoadBalancer.Ingress) == 0
	})
	on.Kill()

	// --all-service-events: the informational Events too; a failure is the
	// stock controller's Warning.
	all := h.StartCCM("ccm-all", append(args, "--all-service-events")...)
	create(t, cs, LBService("writer", "loud"))
	waitIP(t, cs, "writer", "loud")
	for _, reason := range []string{"EnsuringLoadBalancer", "EnsuredLoadBalancer"} {
		waitEvent(t, cs, "writer", "Service", "loud", v1.EventTypeNormal, reason)
	}
	create(t, cs, LBService("writer", "full")) // the /30 has two usable addresses, both taken
	ev := waitEvent(t, cs, "writer", "Service", "full", v1.EventTypeWarning, "SyncLoadBalancerFailed")
	if !strings.HasPrefix(ev.Message, "Error syncing load balancer: failed to ensure load balancer: ") {
		t.Errorf("SyncLoadBalancerFailed message %q", ev.Message)
	}
	noStock(all)
}
