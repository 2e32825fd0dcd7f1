package lbsvc

import (
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"strings"
)

// Names of the Leases vip writes in the agent's namespace (default
// kube-system). Tenant namespaces hold no vip Lease.
const (
	// AddressLeasePrefix prefixes the per-address ownership Leases:
	// vip-addr-<addr> (see AddressLeaseName). The holder announces every
	// Service whose status carries the address.
	AddressLeasePrefix = "vip-addr-"
	// ConflictLeasePrefix prefixes the address conflict records:
	// vip-conflict-<addr>, written when another host answered the probe.
	ConflictLeasePrefix = "vip-conflict-"
	// DHCPLeasePrefix prefixes the per-Service Leases of DHCP Services:
	// vip-dhcp-<namespace>-<service> (see DHCPLeaseName).
	DHCPLeasePrefix = "vip-dhcp-"
)

// Labels and annotations of the Leases vip-agent writes in its namespace,
// read by vip-ccm too (package election writes them).
const (
	// LabelLeaseManagedBy marks every Lease written by vip-agent.
	LabelLeaseManagedBy = "app.kubernetes.io/managed-by"
	// LeaseManagedByAgent is the value of LabelLeaseManagedBy.
	LeaseManagedByAgent = "vip-agent"
	// LabelLeaseRole says what a Lease is: LeaseRole* below.
	LabelLeaseRole = "vip.io/role"
	// LeaseRoleHeartbeat: a node heartbeat (vip-node-<node>).
	LeaseRoleHeartbeat = "heartbeat"
	// LeaseRoleService: the Lease of a DHCP Service (vip-dhcp-…).
	LeaseRoleService = "service"
	// LeaseRoleAddress: a per-address Lease (vip-addr-<addr>).
	LeaseRoleAddress = "address"
	// LeaseRoleConflict: an address conflict record (vip-conflict-<addr>).
	LeaseRoleConflict = "conflict"
	// LabelLeaseService names the Service of a Service Lease (its name).
	LabelLeaseService = "vip.io/service"
	// AnnotationLeaseService names the Service (namespace/name) of a
	// Service Lease.
	AnnotationLeaseService = "vip.io/service"
	// HeartbeatLeasePrefix prefixes heartbeat Lease names: vip-node-<node>.
	HeartbeatLeasePrefix = "vip-node-"
)

// Annotations of the agent's heartbeat Lease (vip-node-<node>), of the
// control-plane lock Lease and of conflict records.
const (
	// AnnotationNodeAddresses lists the node's global unicast interface
	// addresses, comma-separated, without prefix length.
	AnnotationNodeAddresses = "vip.io/addresses"
	// AnnotationNodeGateways lists the node's default gateways.
	AnnotationNodeGateways = "vip.io/gateways"
	// AnnotationNodeMACs lists the hardware addresses of the node's
	// interfaces, comma-separated: a probe answered by one of them met a
	// vip node (for example an address left bound by a killed agent), not
	// a foreign host.
	AnnotationNodeMACs = "vip.io/macs"
	// AnnotationNodeReady is "true" while the agent has synced and can
	// serve Services; only such nodes are candidates.
	AnnotationNodeReady = "vip.io/ready"
	// AnnotationControlPlaneAddress carries the control-plane VIP on the
	// control-plane lock Lease.
	AnnotationControlPlaneAddress = "vip.io/control-plane-address"
	// AnnotationAddress, AnnotationMAC and AnnotationNode describe an
	// address conflict record (and AnnotationAddress names the address of
	// an address Lease).
	AnnotationAddress = "vip.io/address"
	AnnotationMAC     = "vip.io/mac"
	AnnotationNode    = "vip.io/node"
)

// addrSuffix encodes an address for a Lease name: IPv4 dotted with '.'→'-',
// IPv6 expanded with ':'→'-'.
func addrSuffix(a netip.Addr) string {
	a = a.Unmap()
	if a.Is4() {
		return strings.ReplaceAll(a.String(), ".", "-")
	}
	return strings.ReplaceAll(a.StringExpanded(), ":", "-")
}

// AddressLeaseName is the name of the Lease electing the node that
// announces a (layer 2) address: vip-addr-<addr>.
func AddressLeaseName(a netip.Addr) string { return AddressLeasePrefix + addrSuffix(a) }

// ConflictLeaseName is the name of the conflict record of an address:
// vip-conflict-<addr>.
func ConflictLeaseName(a netip.Addr) string { return ConflictLeasePrefix + addrSuffix(a) }

// AddressFromLeaseName returns the address named by an address Lease name
// (vip-addr-<addr>) or a conflict record name; ok is false for other names.
func AddressFromLeaseName(name string) (netip.Addr, bool) {
	s, ok := strings.CutPrefix(name, AddressLeasePrefix)
	if !ok {
		if s, ok = strings.CutPrefix(name, ConflictLeasePrefix); !ok {
			return netip.Addr{}, false
		}
	}
	var text string
	switch strings.Count(s, "-") {
	case 3:
		text = strings.ReplaceAll(s, "-", ".")
	case 7:
		text = strings.ReplaceAll(s, "-", ":")
	default:
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(text)
	if err != nil || addrSuffix(a) != s {
		return netip.Addr{}, false
	}
	return a, true
}

// maxLeaseName is the longest Lease name (a DNS subdomain label set is 253,
// but names that also fit a label are safer for selectors and tools).
const maxLeaseName = 63

// DHCPLeaseName is the name of the Lease of a DHCP Service in the agent's
// namespace: vip-dhcp-<namespace>-<service>, or, when that exceeds 63
// characters, a prefix of it and a hash of the whole key.
func DHCPLeaseName(namespace, name string) string {
	n := DHCPLeasePrefix + namespace + "-" + name
	if len(n) <= maxLeaseName {
		return n
	}
	sum := sha256.Sum256([]byte(namespace + "/" + name))
	h := hex.EncodeToString(sum[:])[:16]
	return strings.TrimRight(n[:maxLeaseName-len(h)-1], "-.") + "-" + h
}
