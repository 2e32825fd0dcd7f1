package dhcpsource

import (
	"context"
	"net"
	"net/netip"
	"testing"

	coordv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/vip-lb/vip/pkg/dhcp"
	"github.com/vip-lb/vip/pkg/lbsvc"
)

// TestDHCPRecordWithoutPatch: under kube-vip's RBAC (update on Leases, no
// patch) the DHCP record still reaches the Service Lease, where vip-ccm
// reads it.
func TestDHCPRecordWithoutPatch(t *testing.T) {
	ctx := context.Background()
	lease := &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "vip-dhcp-default-web", Namespace: "kube-system",
		Annotations: map[string]string{"other": "kept"}}}
	client := fake.NewClientset(lease)
	patches := 0
	client.PrependReactor("patch", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		patches++
		return true, nil, apierrors.NewForbidden(coordv1.Resource("leases"), "vip-dhcp-default-web", nil)
	})
	s := New(Options{Client: client, Clients: &recordingClients{}})
	l := dhcp.Lease{Addr: netip.MustParseAddr("10.7.0.150"), MAC: net.HardwareAddr{0x0a, 0, 0, 0, 0, 1}}
	if err := s.record(ctx, "default/web", "kube-system", "vip-dhcp-default-web", l); err != nil {
		t.Fatal(err)
	}
	got, err := client.CoordinationV1().Leases("kube-system").Get(ctx, "vip-dhcp-default-web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if patches != 1 || got.Annotations[lbsvc.AnnotationDHCPAddress] != "10.7.0.150" || got.Labels[lbsvc.LabelDHCP] != "true" || got.Annotations["other"] != "kept" {
		t.Fatalf("after %d patches: labels %v annotations %v", patches, got.Labels, got.Annotations)
	}
}
