package controlplane

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// The rules below are the control-plane VIP's. The controller checks its
// Options with them, vip-agent its configuration (pkg/agentconfig) and
// `vip-agent manifest` the manifests it writes (pkg/manifest), so each
// lives once. Their errors name no flag: each caller puts its own in front.

// CheckAddress accepts a control-plane VIP: an IP address usable as a
// virtual IP (not unspecified, loopback, multicast, link-local or zoned) or
// a DNS name.
func CheckAddress(s string) error {
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return errors.New("cannot be a virtual IP (not usable: it has a zone)")
		}
		return checkVIP(a.Unmap())
	}
	if strings.Contains(s, "/") {
		return errors.New("is not an address: give the address without a prefix length")
	}
	if errs := validation.IsDNS1123Subdomain(strings.TrimSuffix(s, ".")); len(errs) > 0 {
		return errors.New("is neither an IP address nor a DNS name")
	}
	return nil
}

// checkVIP refuses addresses no host may announce as a virtual IP.
func checkVIP(a netip.Addr) error {
	if !a.IsValid() || a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() {
		return errors.New("cannot be a virtual IP (not usable: unspecified, loopback, multicast or link-local)")
	}
	return nil
}

// CheckLeaseTimings checks the control-plane Lease timings: all positive
// and retry < renew deadline < duration.
func CheckLeaseTimings(duration, renew, retry time.Duration) error {
	if duration <= 0 || renew <= 0 || retry <= 0 || renew >= duration || retry >= renew {
		return fmt.Errorf("lease timings must satisfy 0 < retry (%v) < renew deadline (%v) < duration (%v)", retry, renew, duration)
	}
	return nil
}

// CheckDDNS checks dynamic DNS (kube-vip's vip_ddns): the address must be
// a DNS name (sent as the DHCP host name), the lease is taken on a macvlan
// of iface, and one elected node holds it (not every ready node, as BGP
// without leader election would have it).
func CheckDDNS(address, iface string, everyReadyNode bool) error {
	switch _, err := netip.ParseAddr(address); {
	case err == nil:
		return fmt.Errorf("needs a DNS name in --address (sent as the DHCP host name), not the address %s", address)
	case iface == "":
		return errors.New("needs --interface (vip_interface): the DHCP lease is taken on a macvlan of it")
	case everyReadyNode:
		return errors.New("with BGP needs leader election (--leader-election, vip_leaderelection; the generator's --leaderElection): one node holds the DHCP lease")
	}
	return nil
}
