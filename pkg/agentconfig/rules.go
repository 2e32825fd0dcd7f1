package agentconfig

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// The rules below are shared by the agent's own checks (Validate) and by
// `vip-agent manifest` (pkg/manifest), which refuses a manifest the agent
// would refuse. Their errors name no flag: each caller puts its own flag
// name in front.

// CheckVIPAddress accepts a control-plane VIP: an IP address usable as a
// virtual IP (not unspecified, loopback, multicast, link-local or zoned) or
// a DNS name.
func CheckVIPAddress(s string) error {
	if a, err := netip.ParseAddr(s); err == nil {
		a = a.Unmap()
		if a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() || a.Zone() != "" {
			return errors.New("cannot be a virtual IP (not usable: unspecified, loopback, multicast or link-local)")
		}
		return nil
	}
	if strings.Contains(s, "/") {
		return errors.New("is not an address: give the address without a prefix length")
	}
	if errs := validation.IsDNS1123Subdomain(strings.TrimSuffix(s, ".")); len(errs) > 0 {
		return errors.New("is neither an IP address nor a DNS name")
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

// CheckDDNS checks dynamic DNS (kube-vip's vip_ddns): the control-plane
// address must be a DNS name (sent as the DHCP host name), the lease is
// taken on a macvlan of iface, and with BGP one elected node holds it.
func CheckDDNS(address, iface string, bgp, leaderElection bool) error {
	switch _, err := netip.ParseAddr(address); {
	case err == nil:
		return fmt.Errorf("needs a DNS name in --address (sent as the DHCP host name), not the address %s", address)
	case iface == "":
		return errors.New("needs --interface (vip_interface): the DHCP lease is taken on a macvlan of it")
	case bgp && !leaderElection:
		return errors.New("with BGP needs leader election (--leader-election, vip_leaderelection; the generator's --leaderElection): one node holds the DHCP lease")
	}
	return nil
}
