package lbsvc

import (
	"net/netip"
	"strings"
	"testing"
)

func TestAddressLeaseName(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"192.168.1.10", "vip-addr-192-168-1-10"},
		{"2001:db8::5", "vip-addr-2001-0db8-0000-0000-0000-0000-0000-0005"},
		{"::ffff:10.0.0.1", "vip-addr-10-0-0-1"},
	} {
		a := netip.MustParseAddr(tc.addr)
		if got := AddressLeaseName(a); got != tc.want {
			t.Errorf("AddressLeaseName(%s) = %q, want %q", tc.addr, got, tc.want)
		}
		back, ok := AddressFromLeaseName(tc.want)
		if !ok || back != a.Unmap() {
			t.Errorf("AddressFromLeaseName(%q) = %v, %v; want %v", tc.want, back, ok, a.Unmap())
		}
		if c := ConflictLeaseName(a); !strings.HasPrefix(c, ConflictLeasePrefix) {
			t.Errorf("ConflictLeaseName(%s) = %q", tc.addr, c)
		}
	}
	for _, bad := range []string{"vip-addr-", "vip-addr-1-2-3", "vip-addr-a-b-c-d", "vip-node-x", "kubevip-web",
		"vip-addr-2001-db8-0-0-0-0-0-5", "vip-addr-010-0-0-1"} {
		if a, ok := AddressFromLeaseName(bad); ok {
			t.Errorf("AddressFromLeaseName(%q) = %v, want refused", bad, a)
		}
	}
}

func TestDHCPLeaseName(t *testing.T) {
	if got := DHCPLeaseName("team-a", "web"); got != "vip-dhcp-team-a-web" {
		t.Errorf("short name: %q", got)
	}
	long := DHCPLeaseName(strings.Repeat("n", 63), strings.Repeat("s", 63))
	if len(long) > 63 || !strings.HasPrefix(long, DHCPLeasePrefix) {
		t.Errorf("long name %q (%d chars)", long, len(long))
	}
	if DHCPLeaseName(strings.Repeat("n", 63), strings.Repeat("s", 62)+"t") == long {
		t.Error("two long keys share a name")
	}
}

func FuzzAddressFromLeaseName(f *testing.F) {
	f.Add("vip-addr-10-0-0-1")
	f.Add("vip-addr-2001-0db8-0000-0000-0000-0000-0000-0005")
	f.Fuzz(func(t *testing.T, s string) {
		a, ok := AddressFromLeaseName(s)
		if ok && AddressLeaseName(a) != s && ConflictLeaseName(a) != s {
			t.Fatalf("%q parsed to %v which names %q", s, a, AddressLeaseName(a))
		}
	})
}
