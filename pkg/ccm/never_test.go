package ccm

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vip-lb/vip/pkg/lbsvc"
)

func agentLease(name string, ann map[string]string) *coordv1.Lease {
	now := metav1.NewMicroTime(time.Now())
	return &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "kube-system", Annotations: ann},
		Spec: coordv1.LeaseSpec{RenewTime: &now}}
}

// TestNeverAssignable: every source of never-assignable addresses refuses a
// request with a reason, and pool picks step over them; a tenant's Lease
// carrying the same annotations is ignored.
func TestNeverAssignable(t *testing.T) {
	node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"},
		Spec:   v1.NodeSpec{PodCIDRs: []string{"10.0.0.16/30"}},
		Status: v1.NodeStatus{Addresses: []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "10.0.0.1"}}}}
	clusterIP := lbSvc("other", "cip", func(s *v1.Service) {
		s.Spec.Type = v1.ServiceTypeClusterIP
		s.Spec.ClusterIPs = []string{"10.0.0.2"}
	})
	hb := agentLease("vip-node-n1", map[string]string{lbsvc.AnnotationNodeAddresses: "10.0.0.3,fd00::3", lbsvc.AnnotationNodeGateways: "10.0.0.4"})
	cp := agentLease("plndr-cp-lock", map[string]string{lbsvc.AnnotationControlPlaneAddress: "10.0.0.5"})
	tenant := agentLease("vip-node-evil", map[string]string{lbsvc.AnnotationNodeAddresses: "10.0.0.6"})
	tenant.Namespace = "tenant"
	lb, rec := newTestLB(t, DefaultOptions(), map[string]string{"range-global": "10.0.0.1-10.0.0.30", "skip-dot0-dot255": "false"},
		node, clusterIP, hb, cp, tenant)
	waitFor(t, "the Lease informer sees the heartbeat", func() bool {
		lb.mu.Lock()
		defer lb.mu.Unlock()
		return lb.never.cpLease[netip.MustParseAddr("10.0.0.5")] > 0 && lb.never.heartbeat[netip.MustParseAddr("10.0.0.4")] > 0
	})
	for _, tc := range []struct{ addr, why string }{
		{"10.0.0.1", "address of a Node"},
		{"10.0.0.2", "Service CIDR"},
		{"10.0.0.3", "interface address or default gateway"},
		{"fd00::3", "interface address or default gateway"},
		{"10.0.0.4", "interface address or default gateway"},
		{"10.0.0.5", "control-plane address"},
		{"10.0.0.17", "pod CIDR"},
	} {
		svc := lbSvc("team", "s"+tc.addr, func(s *v1.Service) { s.Annotations = map[string]string{lbsvc.AnnotationLoadBalancerIPs: tc.addr} })
		if ips, err := ensureIPs(t, lb, svc); err == nil {
			t.Errorf("%s: got %v", tc.addr, ips)
		}
		if evs := drain(rec); len(evs) != 1 || !strings.Contains(evs[0], ReasonForbidden) || !strings.Contains(evs[0], tc.why) {
			t.Errorf("%s: events %q, want AddressForbidden saying %q", tc.addr, evs, tc.why)
		}
	}
	// The tenant's forged heartbeat changes nothing: 10.0.0.6 is the first pick.
	if ips, err := ensureIPs(t, lb, lbSvc("team", "pick")); err != nil || len(ips) != 1 || ips[0] != "10.0.0.6" {
		t.Errorf("first pick %v %v, want 10.0.0.6", ips, err)
	}
	// The heartbeat stops publishing 10.0.0.3: it may be handed out again.
	hb.Annotations[lbsvc.AnnotationNodeAddresses] = "fd00::3"
	if _, err := lb.client.CoordinationV1().Leases("kube-system").Update(context.Background(), hb, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "10.0.0.3 assignable again", func() bool {
		ips, err := ensureIPs(t, lb, lbSvc("team", "again"))
		if err == nil && len(ips) == 1 && ips[0] == "10.0.0.3" {
			return true
		}
		lb.release("team/again")
		return false
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
