package addr

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// InterfaceFor returns the interface whose connected (gateway-less) route
// covers vip, as the kernel's route lookup sees it. It fails with
// ErrNoInterface when vip is reached through a gateway, only through the
// loopback interface, or not at all. For an address that is already local
// the lookup answers "lo", so the interface it is held on, or else the most
// specific connected route of the main table, is used instead.
func (m *Manager) InterfaceFor(vip netip.Addr) (string, error) {
	vip = normalize(vip)
	if err := Valid(vip); err != nil {
		return "", err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return "", ErrClosed
	}
	r, err := m.route(vip)
	if err != nil {
		return "", err
	}
	return m.interfaceFrom(vip, r)
}

// routeResult is what one route lookup tells about an address.
type routeResult struct {
	route *netlink.Route // nil when unreachable
	local bool           // the address is on this node already
}

// route looks vip up in the kernel's routing tables; callers hold m.mu.
func (m *Manager) route(vip netip.Addr) (routeResult, error) {
	routes, err := m.k.RouteGet(vip.AsSlice())
	if err != nil {
		if errors.Is(err, unix.ENETUNREACH) || errors.Is(err, unix.EHOSTUNREACH) {
			return routeResult{}, nil
		}
		return routeResult{}, fmt.Errorf("route lookup for %s: %w", vip, err)
	}
	if len(routes) == 0 {
		return routeResult{}, nil
	}
	return routeResult{route: &routes[0], local: routes[0].Type == unix.RTN_LOCAL}, nil
}

// interfaceFrom turns a route lookup into an interface name; callers hold m.mu.
func (m *Manager) interfaceFrom(vip netip.Addr, r routeResult) (string, error) {
	switch {
	case r.route == nil:
		return "", fmt.Errorf("%s: no route: %w", vip, ErrNoInterface)
	case r.local:
		if e, ok := m.held[vip]; ok {
			return e.iface, nil
		}
		return m.connected(vip)
	case !directlyConnected(*r.route):
		return "", fmt.Errorf("%s is routed through a gateway: %w", vip, ErrNoInterface)
	}
	return m.usableLink(vip, r.route.LinkIndex)
}

// directlyConnected reports whether r sends straight to the destination.
func directlyConnected(r netlink.Route) bool {
	return r.Gw == nil && r.Via == nil && len(r.MultiPath) == 0 && r.LinkIndex > 0
}

// usableLink returns the name of the link with index, refusing loopback.
func (m *Manager) usableLink(vip netip.Addr, index int) (string, error) {
	l, err := m.linkByIndex(index)
	if err != nil {
		return "", fmt.Errorf("looking up interface %d for %s: %w", index, vip, err)
	}
	if l.loopback {
		return "", fmt.Errorf("%s is only reachable on loopback %q: %w", vip, l.name, ErrNoInterface)
	}
	return l.name, nil
}

// connected picks the most specific gateway-less route of the main table
// that contains vip, skipping loopback.
func (m *Manager) connected(vip netip.Addr) (string, error) {
	routes, err := m.k.RouteListFiltered(family(vip), &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return "", fmt.Errorf("listing routes for %s: %w", vip, err)
	}
	best, bestLen := "", -1
	for _, r := range routes {
		if r.Dst == nil || !directlyConnected(r) {
			continue
		}
		p, ok := prefixOf(r.Dst)
		if !ok || !p.Contains(vip) || p.Bits() <= bestLen {
			continue
		}
		l, err := m.linkByIndex(r.LinkIndex)
		if err != nil || l.loopback {
			continue
		}
		best, bestLen = l.name, p.Bits()
	}
	if best == "" {
		return "", fmt.Errorf("%s: no connected route: %w", vip, ErrNoInterface)
	}
	return best, nil
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	ip, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(ip.Unmap(), ones), true
}

// linkTTL bounds how long a cached name/index pair is trusted. Interfaces
// are rarely renamed or recreated; a failed kernel call also drops the cache.
const linkTTL = 10 * time.Second

// linkInfo is a cached interface.
type linkInfo struct {
	name     string
	index    int
	loopback bool
	at       time.Time
}

// netlinkLink is the handle form of l for address calls.
func (l linkInfo) netlinkLink() netlink.Link {
	return &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: l.name, Index: l.index}}
}

func newLinkInfo(l netlink.Link) linkInfo {
	a := l.Attrs()
	return linkInfo{name: a.Name, index: a.Index, loopback: a.Name == "lo" || a.Flags&net.FlagLoopback != 0, at: time.Now()}
}

// linkByName resolves name through the cache; callers hold m.mu.
func (m *Manager) linkByName(name string) (linkInfo, error) {
	if l, ok := m.linksByName[name]; ok && time.Since(l.at) < linkTTL {
		return l, nil
	}
	nl, err := m.k.LinkByName(name)
	if err != nil {
		return linkInfo{}, err
	}
	l := newLinkInfo(nl)
	m.remember(l)
	return l, nil
}

// linkByIndex resolves index through the cache; callers hold m.mu.
func (m *Manager) linkByIndex(index int) (linkInfo, error) {
	if l, ok := m.linksByIndex[index]; ok && time.Since(l.at) < linkTTL {
		return l, nil
	}
	nl, err := m.k.LinkByIndex(index)
	if err != nil {
		return linkInfo{}, err
	}
	l := newLinkInfo(nl)
	m.remember(l)
	return l, nil
}

func (m *Manager) remember(l linkInfo) {
	m.linksByName[l.name] = l
	m.linksByIndex[l.index] = l
}

// forgetLinks empties the cache after a kernel call failed.
func (m *Manager) forgetLinks() {
	clear(m.linksByName)
	clear(m.linksByIndex)
}
