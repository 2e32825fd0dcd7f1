package agent

import (
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vip-lb/vip/pkg/lbsvc"
)

func TestVIPBoundAddressesAreNotNodeAddresses(t *testing.T) {
	for _, tc := range []struct {
		name string
		a    netlink.Addr
		want bool
	}{
		{"node IPv4", netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("10.0.0.11").To4(), Mask: net.CIDRMask(24, 32)}, Label: "eth0"}, false},
		{"vip IPv4", netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("10.0.0.200").To4(), Mask: net.CIDRMask(32, 32)}, Label: "eth0:vip"}, true},
		{"node IPv6", netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("fd00::11"), Mask: net.CIDRMask(64, 128)}, PreferedLft: 3600}, false},
		{"vip IPv6", netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("fd00::200"), Mask: net.CIDRMask(128, 128)},
			Flags: unix.IFA_F_NODAD | unix.IFA_F_NOPREFIXROUTE}, true},
	} {
		if got := vipBound(tc.a); got != tc.want {
			t.Errorf("%s: vipBound = %v, want %v", tc.name, got, tc.want)
		}
	}
	info := NodeInfo{Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.11"), netip.MustParseAddr("fd00::11")},
		Gateways: []netip.Addr{netip.MustParseAddr("10.0.0.1")}}
	ann := info.Annotations()
	if ann[lbsvc.AnnotationNodeAddresses] != "10.0.0.11,fd00::11" || ann[lbsvc.AnnotationNodeGateways] != "10.0.0.1" {
		t.Fatalf("annotations %v", ann)
	}
}

// TestReadNodeInfo reads this host's addresses: none of them is one vip
// binds, and every one is global unicast.
func TestReadNodeInfo(t *testing.T) {
	info, err := ReadNodeInfo(nil)
	if err != nil {
		t.Skipf("netlink not available: %v", err)
	}
	for _, a := range info.Addresses {
		if !a.IsGlobalUnicast() {
			t.Errorf("published %s, not global unicast", a)
		}
	}
}
