package addr

import (
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// fakeKernel is an in-memory stand-in for the netlink calls of a Manager.
type fakeKernel struct {
	mu      sync.Mutex
	links   map[string]int // name -> index; "lo" is 1
	addrs   []netlink.Addr
	routes  []netlink.Route
	failAdd error
	failDel error
	adds    int
}

func newFakeKernel(links ...string) *fakeKernel {
	k := &fakeKernel{links: map[string]int{"lo": 1}}
	for i, l := range links {
		k.links[l] = i + 2
	}
	return k
}

func (k *fakeKernel) link(name string, index int) netlink.Link {
	attrs := netlink.LinkAttrs{Name: name, Index: index}
	if name == "lo" {
		attrs.Flags = net.FlagLoopback
	}
	return &netlink.Dummy{LinkAttrs: attrs}
}

func (k *fakeKernel) LinkByName(name string) (netlink.Link, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	i, ok := k.links[name]
	if !ok {
		return nil, fmt.Errorf("link %q: %w", name, unix.ENODEV)
	}
	return k.link(name, i), nil
}

func (k *fakeKernel) LinkByIndex(index int) (netlink.Link, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for n, i := range k.links {
		if i == index {
			return k.link(n, i), nil
		}
	}
	return nil, unix.ENODEV
}

func same(a, b netlink.Addr) bool {
	ao, _ := a.Mask.Size()
	bo, _ := b.Mask.Size()
	return a.IP.Equal(b.IP) && ao == bo && a.LinkIndex == b.LinkIndex
}

func (k *fakeKernel) AddrAdd(link netlink.Link, a *netlink.Addr) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.adds++
	if k.failAdd != nil {
		return k.failAdd
	}
	n := *a
	n.LinkIndex = link.Attrs().Index
	for _, x := range k.addrs {
		if same(x, n) {
			return unix.EEXIST
		}
	}
	k.addrs = append(k.addrs, n)
	return nil
}

func (k *fakeKernel) AddrDel(link netlink.Link, a *netlink.Addr) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.failDel != nil {
		return k.failDel
	}
	n := *a
	if link != nil {
		n.LinkIndex = link.Attrs().Index
	}
	for i, x := range k.addrs {
		if same(x, n) {
			k.addrs = append(k.addrs[:i], k.addrs[i+1:]...)
			return nil
		}
	}
	return unix.EADDRNOTAVAIL
}

func (k *fakeKernel) AddrList(link netlink.Link, family int) ([]netlink.Addr, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []netlink.Addr
	for _, a := range k.addrs {
		if link != nil && a.LinkIndex != link.Attrs().Index {
			continue
		}
		is4 := a.IP.To4() != nil
		if (family == netlink.FAMILY_V4 && !is4) || (family == netlink.FAMILY_V6 && is4) {
			continue
		}
		out = append(out, a)
	}
	return out, nil
}

func (k *fakeKernel) RouteGet(dst net.IP) ([]netlink.Route, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, a := range k.addrs {
		if a.IP.Equal(dst) {
			return []netlink.Route{{Type: unix.RTN_LOCAL, LinkIndex: 1}}, nil
		}
	}
	ip, _ := netip.AddrFromSlice(dst)
	best, bestLen := -1, -1
	for i, r := range k.routes {
		p, _ := prefixOf(r.Dst)
		if p.Contains(ip.Unmap()) && p.Bits() > bestLen {
			best, bestLen = i, p.Bits()
		}
	}
	if best < 0 {
		return nil, unix.ENETUNREACH
	}
	r := k.routes[best]
	r.Type = unix.RTN_UNICAST
	return []netlink.Route{r}, nil
}

func (k *fakeKernel) RouteListFiltered(family int, _ *netlink.Route, _ uint64) ([]netlink.Route, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []netlink.Route
	for _, r := range k.routes {
		if (r.Dst.IP.To4() != nil) == (family == netlink.FAMILY_V4) {
			out = append(out, r)
		}
	}
	return out, nil
}

// addRoute adds a route to prefix on link, through gw if not empty.
func (k *fakeKernel) addRoute(prefix, link, gw string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	_, n, err := net.ParseCIDR(prefix)
	if err != nil {
		panic(err)
	}
	r := netlink.Route{Dst: n, LinkIndex: k.links[link]}
	if gw != "" {
		r.Gw = net.ParseIP(gw)
	}
	k.routes = append(k.routes, r)
}

// put adds an address as another program would.
func (k *fakeKernel) put(cidr, link, label string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	ip, n, err := net.ParseCIDR(cidr)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	k.addrs = append(k.addrs, netlink.Addr{IPNet: n, LinkIndex: k.links[link], Label: label})
}

// find returns the address ip/bits on link, if present.
func (k *fakeKernel) find(cidr, link string) (netlink.Addr, bool) {
	ip, n, err := net.ParseCIDR(cidr)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	k.mu.Lock()
	defer k.mu.Unlock()
	want := netlink.Addr{IPNet: n, LinkIndex: k.links[link]}
	for _, a := range k.addrs {
		if same(a, want) {
			return a, true
		}
	}
	return netlink.Addr{}, false
}

func (k *fakeKernel) count() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.addrs)
}
