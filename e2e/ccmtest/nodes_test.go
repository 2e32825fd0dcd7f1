package ccmtest

import (
	"slices"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const taintUninitialized = "node.cloudprovider.kubernetes.io/uninitialized"

// testNodeInit registers Nodes as kubelets started with
// --cloud-provider=external do (no kubelet runs here) and checks that the
// cloud-node controller initialises them through vip's InstancesV2.
func testNodeInit(t *testing.T, h *Harness) {
	cs := h.Admin
	ctx := tctx(t)
	// A node that reported its addresses itself.
	createNode(t, cs, "ext-1", true,
		v1.NodeAddress{Type: v1.NodeInternalIP, Address: nodeIPOut},
		v1.NodeAddress{Type: v1.NodeInternalIP, Address: nodeIPOut6},
		v1.NodeAddress{Type: v1.NodeHostName, Address: "ext-1"})
	// A node that only carries the kubelet's --node-ip annotation.
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{
		Name:        "ext-2",
		Labels:      map[string]string{v1.LabelHostname: "ext-2"},
		Annotations: map[string]string{"alpha.kubernetes.io/provided-node-ip": "10.200.0.10"},
	}, Spec: v1.NodeSpec{Taints: []v1.Taint{{Key: taintUninitialized, Value: "true", Effect: v1.TaintEffectNoSchedule}}}}
	if _, err := cs.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name  string
		addrs []v1.NodeAddress
	}{
		{"ext-1", []v1.NodeAddress{
			{Type: v1.NodeInternalIP, Address: nodeIPOut},
			{Type: v1.NodeInternalIP, Address: nodeIPOut6},
			{Type: v1.NodeHostName, Address: "ext-1"}}},
		{"ext-2", []v1.NodeAddress{
			{Type: v1.NodeInternalIP, Address: "10.200.0.10"},
			{Type: v1.NodeHostName, Address: "ext-2"}}},
	} {
		var node *v1.Node
		waitFor(t, tc.name+" initialised", func() bool {
			var err error
			node, err = cs.CoreV1().Nodes().Get(ctx, tc.name, metav1.GetOptions{})
			if err != nil {
				return false
			}
			tainted := slices.ContainsFunc(node.Spec.Taints, func(x v1.Taint) bool { return x.Key == taintUninitialized })
			return !tainted && node.Spec.ProviderID != "" && len(node.Status.Addresses) >= len(tc.addrs)
		})
		if want := "vip://" + tc.name; node.Spec.ProviderID != want {
			t.Errorf("%s: providerID %q, want %q", tc.name, node.Spec.ProviderID, want)
		}
		for _, a := range tc.addrs {
			if !slices.Contains(node.Status.Addresses, a) {
				t.Errorf("%s: address %v missing from %v", tc.name, a, node.Status.Addresses)
			}
		}
		waitEvent(t, cs, "default", "Node", tc.name, v1.EventTypeNormal, "Synced")
	}

	// The addresses the cloud-node controller gave ext-2 are node addresses
	// now: no Service may have them.
	create(t, cs, LBService("forbid", "ext2", WithAnnotation(annIPs, "10.200.0.10")))
	waitEvent(t, cs, "forbid", "Service", "ext2", v1.EventTypeWarning, "AddressForbidden")
	assertPending(t, cs, "forbid", "ext2", 0)
}
