package addr_test

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vip-lb/vip/pkg/announce/addr"
	"github.com/vip-lb/vip/pkg/announce/internal/nstest"
)

// These tests change addresses inside namespaces they create; they skip
// unless run as root.

func newManager(t *testing.T, ns *nstest.NS, path string) *addr.Manager {
	t.Helper()
	m, err := addr.New(addr.Options{Handle: ns.Netlink, StatePath: path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// kernelAddr returns the address ip as the kernel lists it on the veth.
func kernelAddr(t *testing.T, ns *nstest.NS, ip netip.Addr) (netlink.Addr, bool) {
	t.Helper()
	addrs, err := ns.Netlink.AddrList(ns.Link(t), netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if x, ok := netip.AddrFromSlice(a.IP); ok && x.Unmap() == ip {
			return a, true
		}
	}
	return netlink.Addr{}, false
}

func TestKernelBindUnbind(t *testing.T) {
	p := nstest.NewPair(t)
	m := newManager(t, p.A, filepath.Join(t.TempDir(), "a.json"))
	v4 := netip.MustParseAddr("10.66.0.100")
	v6 := netip.MustParseAddr("fd00:66::100")
	for _, v := range []netip.Addr{v4, v6} {
		iface, err := m.InterfaceFor(v)
		if err != nil || iface != nstest.Iface {
			t.Fatalf("InterfaceFor(%s) = %q, %v", v, iface, err)
		}
		if added, err := m.Add("one", v, iface); err != nil || !added {
			t.Fatalf("Add(one, %s) = %v, %v", v, added, err)
		}
		// An empty interface means the one InterfaceFor finds.
		if added, err := m.Add("two", v, ""); err != nil || added {
			t.Fatalf("Add(two, %s) = %v, %v", v, added, err)
		}
	}
	a, ok := kernelAddr(t, p.A, v4)
	if ones, _ := a.Mask.Size(); !ok || ones != 32 || a.Label != "eth0:vip" {
		t.Errorf("IPv4 VIP in kernel: %+v (present %v), want /32 label eth0:vip", a, ok)
	}
	a, ok = kernelAddr(t, p.A, v6)
	ones, _ := a.Mask.Size()
	const want = unix.IFA_F_NODAD | unix.IFA_F_NOPREFIXROUTE | unix.IFA_F_DEPRECATED
	if !ok || ones != 128 || a.Flags&want != want || a.Flags&unix.IFA_F_TENTATIVE != 0 {
		t.Errorf("IPv6 VIP in kernel: %+v (flags %#x, present %v), want /128 nodad noprefixroute deprecated", a, a.Flags, ok)
	}
	// Once bound, the lookup answers "local"; the held interface is used.
	if iface, err := m.InterfaceFor(v4); err != nil || iface != nstest.Iface {
		t.Errorf("InterfaceFor(held) = %q, %v", iface, err)
	}
	for _, v := range []netip.Addr{v4, v6} {
		if removed, err := m.Remove("one", v); err != nil || removed {
			t.Fatalf("Remove(one, %s) = %v, %v", v, removed, err)
		}
		if _, ok := kernelAddr(t, p.A, v); !ok {
			t.Fatalf("%s went while an owner is left", v)
		}
		if removed, err := m.Remove("two", v); err != nil || !removed {
			t.Fatalf("Remove(two, %s) = %v, %v", v, removed, err)
		}
		if _, ok := kernelAddr(t, p.A, v); ok {
			t.Fatalf("%s still bound after its last owner left", v)
		}
	}
}

func TestKernelInterfaceFor(t *testing.T) {
	p := nstest.NewPair(t)
	p.A.MustExec(t, "ip", "route", "add", "10.98.0.0/24", "via", nstest.B4.String())
	p.A.MustExec(t, "ip", "addr", "add", "10.97.0.1/32", "dev", "lo")
	m := newManager(t, p.A, filepath.Join(t.TempDir(), "a.json"))
	for _, c := range []struct {
		vip  string
		want string
		err  error
	}{
		{"10.66.0.150", nstest.Iface, nil},
		{"fd00:66::150", nstest.Iface, nil},
		{nstest.B4.String(), nstest.Iface, nil},
		{"10.99.0.1", "", addr.ErrNoInterface},    // no route at all
		{"10.98.0.1", "", addr.ErrNoInterface},    // through a gateway
		{"10.97.0.1", "", addr.ErrNoInterface},    // only on lo
		{"fd00:99::1", "", addr.ErrNoInterface},   // no IPv6 route
		{"127.0.0.1", "", addr.ErrInvalidAddress}, // never a VIP
	} {
		got, err := m.InterfaceFor(netip.MustParseAddr(c.vip))
		if got != c.want || !errors.Is(err, c.err) {
			t.Errorf("InterfaceFor(%s) = %q, %v; want %q, %v", c.vip, got, err, c.want, c.err)
		}
	}
}

func TestKernelForeignAddressesSurvive(t *testing.T) {
	p := nstest.NewPair(t)
	p.A.MustExec(t, "ip", "addr", "add", "10.66.0.120/32", "dev", nstest.Iface)
	p.A.MustExec(t, "ip", "addr", "add", "fd00:66::120/128", "dev", nstest.Iface, "nodad")
	m := newManager(t, p.A, filepath.Join(t.TempDir(), "a.json"))
	foreign := []netip.Addr{nstest.A4, nstest.A6, netip.MustParseAddr("10.66.0.120"), netip.MustParseAddr("fd00:66::120")}
	for _, v := range foreign {
		added, err := m.Add("svc", v, nstest.Iface)
		if added || !errors.Is(err, addr.ErrForeignAddress) {
			t.Errorf("Add(%s) = %v, %v; want ErrForeignAddress", v, added, err)
		}
		if removed, err := m.Remove("svc", v); removed || err != nil {
			t.Errorf("Remove(%s) = %v, %v", v, removed, err)
		}
	}
	ctx := context.Background()
	if err := m.RemoveAll(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	for _, v := range foreign {
		if _, ok := kernelAddr(t, p.A, v); !ok {
			t.Errorf("%s, not added by us, was removed", v)
		}
	}
}

func TestKernelCleanupAfterCrash(t *testing.T) {
	p := nstest.NewPair(t)
	dir := t.TempDir()
	v4 := netip.MustParseAddr("10.66.0.101")
	v6 := netip.MustParseAddr("fd00:66::101")
	lost := netip.MustParseAddr("10.66.0.102")

	crashed := newManager(t, p.A, filepath.Join(dir, "state.json"))
	for _, v := range []netip.Addr{v4, v6} {
		if _, err := crashed.Add("svc", v, nstest.Iface); err != nil {
			t.Fatal(err)
		}
	}
	// A run whose state file is gone: only the IPv4 label is left.
	gone := newManager(t, p.A, filepath.Join(dir, "gone.json"))
	if _, err := gone.Add("svc", lost, nstest.Iface); err != nil {
		t.Fatal(err)
	}
	p.A.MustExec(t, "ip", "addr", "add", "10.66.0.103/32", "dev", nstest.Iface, "label", "eth0:other")

	next := newManager(t, p.A, filepath.Join(dir, "state.json"))
	// Still wanted: taken back in place, without a gap.
	if added, err := next.Add("svc", v4, ""); err != nil || !added {
		t.Fatalf("taking back %s: %v, %v", v4, added, err)
	}
	if err := next.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, v := range []netip.Addr{v6, lost} {
		if _, ok := kernelAddr(t, p.A, v); ok {
			t.Errorf("leftover %s survived Cleanup", v)
		}
	}
	if _, ok := kernelAddr(t, p.A, v4); !ok {
		t.Errorf("Cleanup removed %s, which was taken back", v4)
	}
	if removed, err := next.Remove("svc", v4); err != nil || !removed {
		t.Fatalf("Remove(%s) = %v, %v", v4, removed, err)
	}
	for _, v := range []netip.Addr{nstest.A4, nstest.A6, netip.MustParseAddr("10.66.0.103")} {
		if _, ok := kernelAddr(t, p.A, v); !ok {
			t.Errorf("Cleanup removed %s, which vip did not add", v)
		}
	}
}

func TestKernelIPv6VIPIsNeverASource(t *testing.T) {
	p := nstest.NewPair(t)
	m := newManager(t, p.A, filepath.Join(t.TempDir(), "a.json"))
	// fd00:66::3 shares a longer prefix with B (::2) than A's own ::1 does,
	// so source selection would pick it if it were a preferred address.
	vip := netip.MustParseAddr("fd00:66::3")
	if _, err := m.Add("svc", vip, nstest.Iface); err != nil {
		t.Fatal(err)
	}
	routes, err := p.A.Netlink.RouteGet(nstest.B6.AsSlice())
	if err != nil || len(routes) == 0 {
		t.Fatalf("route to B: %v, %v", routes, err)
	}
	if src, _ := netip.AddrFromSlice(routes[0].Src); src != nstest.A6 {
		t.Errorf("A would send to B from %s, want its own %s", src, nstest.A6)
	}
}
