package bgpconfig

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/labels"
)

// PeerSelectors limit peers to the nodes whose labels match, as MetalLB's
// BGPPeer nodeSelectors do: a peer with a selector gets a session only from
// matching nodes; a peer without one gets a session from every node.
type PeerSelectors map[netip.Addr]labels.Selector

// ParsePeerSelectors reads entries of the form "address=selector", where
// selector is a Kubernetes label selector ("rack=a", "zone in (x,y)",
// "!spine"). Each entry may hold several of them separated by ';'. The same
// address given twice is an error, as is an empty selector.
func ParsePeerSelectors(entries []string) (PeerSelectors, error) {
	out := PeerSelectors{}
	for _, e := range entries {
		for _, item := range strings.Split(e, ";") {
			item = strings.TrimSpace(item)
			if item == "" {
				continue
			}
			addr, sel, ok := strings.Cut(item, "=")
			if !ok {
				return nil, fmt.Errorf("%w: peer node selector %q: want address=selector", ErrInvalid, item)
			}
			a, err := netip.ParseAddr(strings.Trim(strings.TrimSpace(addr), "[]"))
			if err != nil {
				return nil, fmt.Errorf("%w: peer node selector %q: %q is not an IP address", ErrInvalid, item, addr)
			}
			a = a.Unmap()
			if a.IsUnspecified() || a.IsMulticast() || a.Zone() != "" {
				return nil, fmt.Errorf("%w: peer node selector %q: %s is not a peer address", ErrInvalid, item, a)
			}
			sel = strings.TrimSpace(sel)
			if sel == "" {
				return nil, fmt.Errorf("%w: peer node selector for %s is empty", ErrInvalid, a)
			}
			s, err := labels.Parse(sel)
			if err != nil {
				return nil, fmt.Errorf("%w: peer node selector for %s: %v", ErrInvalid, a, err)
			}
			if s.Empty() {
				return nil, fmt.Errorf("%w: peer node selector for %s (%q) selects every node: leave it out instead", ErrInvalid, a, sel)
			}
			if _, dup := out[a]; dup {
				return nil, fmt.Errorf("%w: peer %s has two node selectors", ErrInvalid, a)
			}
			out[a] = s
		}
	}
	return out, nil
}

// Select returns c with only the peers whose selector matches the node's
// labels; the others are listed in Deselected, which makes an empty peer
// list valid (the node then has no session and advertises nothing).
func (s PeerSelectors) Select(c Config, nodeLabels map[string]string) Config {
	if len(s) == 0 {
		return c
	}
	set := labels.Set(nodeLabels)
	kept := make([]Peer, 0, len(c.Peers))
	c.Deselected = slices.Clone(c.Deselected)
	for _, p := range c.Peers {
		if sel, ok := s[p.Address]; ok && !sel.Matches(set) {
			c.Deselected = append(c.Deselected, p.Address)
			continue
		}
		kept = append(kept, p)
	}
	c.Peers = kept
	return c
}

// Unknown returns the selector addresses that are not among peers, sorted:
// usually a typo, reported rather than refused because node annotations may
// add the peer later.
func (s PeerSelectors) Unknown(peers []Peer) []netip.Addr {
	var out []netip.Addr
	for a := range s {
		if !slices.ContainsFunc(peers, func(p Peer) bool { return p.Address == a }) {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, func(x, y netip.Addr) int { return x.Compare(y) })
	return out
}

// String lists the selectors as "address=selector;…", sorted by address.
func (s PeerSelectors) String() string {
	addrs := make([]netip.Addr, 0, len(s))
	for a := range s {
		addrs = append(addrs, a)
	}
	slices.SortFunc(addrs, func(x, y netip.Addr) int { return x.Compare(y) })
	parts := make([]string, len(addrs))
	for i, a := range addrs {
		parts[i] = a.String() + "=" + s[a].String()
	}
	return strings.Join(parts, ";")
}
