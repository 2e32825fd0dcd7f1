package ccmtest

import (
	"slices"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vip-lb/vip/pkg/lbsvc"
)

const finalizer = "service.kubernetes.io/load-balancer-cleanup"

// TestLoadBalancerClass: Services with vip's loadBalancerClass are served by
// vip's class controller (the stock service controller skips them); with
// --load-balancer-class-only, Services without a class stay pending.
func TestLoadBalancerClass(t *testing.T) {
	h := New(t)
	cs := h.Admin
	ctx := tctx(t)
	h.SetPools(ctx, map[string]string{"cidr-global": "10.75.0.0/28"})
	class := lbsvc.DefaultLoadBalancerClass

	t.Run("ClassAndUnclassed", func(t *testing.T) {
		ccm := h.StartCCM("ccm-mixed", "--load-balancer-class="+class, "--retry-after=2s", "--leader-elect-lease-duration=4s", "--leader-elect-renew-deadline=3s", "--leader-elect-retry-period=500ms")
		create(t, cs, LBService("cls", "classed", WithClass(class)))
		a := waitIP(t, cs, "cls", "classed")
		create(t, cs, LBService("cls", "plain"))
		b := waitIP(t, cs, "cls", "plain")
		if a == b {
			t.Fatalf("classed and plain Services share %s", a)
		}
		create(t, cs, LBService("cls", "foreign", WithClass("example.com/other")))
		assertPending(t, cs, "cls", "foreign", pendingFor)
		svc, err := cs.CoreV1().Services("cls").Get(ctx, "classed", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(svc.Finalizers, finalizer) {
			t.Errorf("classed Service has no %s finalizer: %v", finalizer, svc.Finalizers)
		}
		waitEvent(t, cs, "cls", "Service", "classed", v1.EventTypeNormal, "AddressAllocated")

		// Deleted: the class controller releases the address and removes
		// the finalizer, so the Service goes away, and the address is reused.
		deleteSvc(t, cs, "cls", "classed")
		create(t, cs, LBService("cls", "classed2", WithClass(class)))
		if got := waitIP(t, cs, "cls", "classed2"); got != a {
			t.Errorf("released %s was not reused; got %s", a, got)
		}
		// Type changed away from LoadBalancer (the API server drops the
		// class then): status and finalizer go.
		svc, err = cs.CoreV1().Services("cls").Get(ctx, "classed2", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		svc.Spec.Type = v1.ServiceTypeClusterIP
		if _, err := cs.CoreV1().Services("cls").Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "classed2 loses its finalizer", func() bool {
			s, err := cs.CoreV1().Services("cls").Get(ctx, "classed2", metav1.GetOptions{})
			return err == nil && !slices.Contains(s.Finalizers, finalizer) && len(s.Status.LoadBalancer.Ingress) == 0
		})
		create(t, cs, LBService("cls", "classed3", WithClass(class)))
		if got := waitIP(t, cs, "cls", "classed3"); got != a {
			t.Errorf("released %s was not reused; got %s", a, got)
		}
		ccm.Kill()
	})

	t.Run("ClassOnly", func(t *testing.T) {
		h.StartCCM("ccm-only", "--load-balancer-class="+class, "--load-balancer-class-only", "--retry-after=2s", "--leader-elect-lease-duration=4s", "--leader-elect-renew-deadline=3s", "--leader-elect-retry-period=500ms")
		create(t, cs, LBService("only", "classed", WithClass(class)))
		waitIP(t, cs, "only", "classed")
		create(t, cs, LBService("only", "plain"))
		assertPending(t, cs, "only", "plain", pendingFor)
		// What the previous run assigned is still known (no duplicates).
		l, err := cs.CoreV1().Services("").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		noDuplicates(t, l.Items)
		// Deleting a classed Service still works in this mode.
		deleteSvc(t, cs, "only", "classed")
	})
}
