package agent

import (
	"context"
	"net/netip"
	"testing"

	coordv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"
)

// TestLegacyLeaseCleanup: the node announcing a Service deletes the old
// per-Service Lease kubevip-<service> once; where RBAC forbids reading
// Leases outside the agent namespace it stops looking.
func TestLegacyLeaseCleanup(t *testing.T) {
	vip := netip.MustParseAddr("10.7.0.30")
	old := &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "kubevip-web", Namespace: "team"}}
	el := &askingElector{d: Decision{Announce: true, Holder: "n1"}, alive: []string{"n1"}}
	a, client, _ := startTestAgent(t, ModeARP, el, sharedSvc("web", vip, false), readySlice("web", "n1"), old)
	ctx := context.Background()
	if err := a.syncAddr(ctx, vip); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoordinationV1().Leases("team").Get(ctx, "kubevip-web", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("old Lease still there: %v", err)
	}

	// Forbidden outside the agent namespace: one attempt, then none.
	vip2 := netip.MustParseAddr("10.7.0.31")
	gets := 0
	client.PrependReactor("get", "leases", func(act k8stesting.Action) (bool, runtime.Object, error) {
		if act.GetNamespace() == "team" {
			gets++
			return true, nil, apierrors.NewForbidden(coordv1.Resource("leases"), "kubevip-x", nil)
		}
		return false, nil, nil
	})
	for _, n := range []string{"x", "y"} {
		if _, err := client.CoreV1().Services("team").Create(ctx, sharedSvc(n, vip2, false), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := client.DiscoveryV1().EndpointSlices("team").Create(ctx, readySlice(n, "n1"), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { return len(a.sharers(vip2)) == 2 && len(a.readyEndpoints(sharedSvcKey(a, "y"))) > 0 })
	if err := a.syncAddr(ctx, vip2); err != nil {
		t.Fatal(err)
	}
	if gets != 1 || !a.legacyForbidden {
		t.Fatalf("%d reads outside the agent namespace (forbidden %v), want 1 and then none", gets, a.legacyForbidden)
	}
}
