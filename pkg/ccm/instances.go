package ccm

import (
	"context"
	"net/netip"
	"strings"

	v1 "k8s.io/api/core/v1"
	cloudprovider "k8s.io/cloud-provider"
)

// annotationProvidedNodeIP is set by a kubelet started with
// --cloud-provider=external and --node-ip.
const annotationProvidedNodeIP = "alpha.kubernetes.io/provided-node-ip"

// instances implements cloudprovider.InstancesV2 for machines vip knows
// nothing about: every registered node exists, none is shut down, and the
// addresses are the ones the kubelet reported.
type instances struct{}

var _ cloudprovider.InstancesV2 = instances{}

// InstanceExists reports true: bare metal has no inventory to consult, and
// answering false would make the lifecycle controller delete the node.
func (instances) InstanceExists(context.Context, *v1.Node) (bool, error) { return true, nil }

// InstanceShutdown reports false for the same reason.
func (instances) InstanceShutdown(context.Context, *v1.Node) (bool, error) { return false, nil }

// InstanceMetadata returns a stable providerID and the node's own addresses.
func (instances) InstanceMetadata(_ context.Context, node *v1.Node) (*cloudprovider.InstanceMetadata, error) {
	return &cloudprovider.InstanceMetadata{
		ProviderID:    ProviderID(node),
		NodeAddresses: nodeAddresses(node),
	}, nil
}

// ProviderID is node.spec.providerID when set, else vip://<node name>.
func ProviderID(node *v1.Node) string {
	if node.Spec.ProviderID != "" {
		return node.Spec.ProviderID
	}
	return ProviderName + "://" + node.Name
}

// nodeAddresses keeps what the kubelet reported and adds the IPs it was
// told with --node-ip, so the node controller can accept them.
func nodeAddresses(node *v1.Node) []v1.NodeAddress {
	out := append([]v1.NodeAddress(nil), node.Status.Addresses...)
	has := func(t v1.NodeAddressType, a string) bool {
		for _, x := range out {
			if x.Type == t && x.Address == a {
				return true
			}
		}
		return false
	}
	for _, f := range strings.Split(node.Annotations[annotationProvidedNodeIP], ",") {
		a, err := netip.ParseAddr(strings.TrimSpace(f))
		if err != nil || a.IsUnspecified() {
			continue
		}
		if !has(v1.NodeInternalIP, a.String()) {
			out = append(out, v1.NodeAddress{Type: v1.NodeInternalIP, Address: a.String()})
		}
	}
	host := node.Labels[v1.LabelHostname]
	if host == "" {
		host = node.Name
	}
	if len(out) > 0 && !has(v1.NodeHostName, host) {
		hostKnown := false
		for _, x := range out {
			hostKnown = hostKnown || x.Type == v1.NodeHostName
		}
		if !hostKnown {
			out = append(out, v1.NodeAddress{Type: v1.NodeHostName, Address: host})
		}
	}
	return out
}
