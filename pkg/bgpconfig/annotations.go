package bgpconfig

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Annotation key suffixes read from a Node, after "<prefix>/". They are
// kube-vip's; KeyPeers (a peer list in ParsePeers form) is vip's, and the
// indexed form "bgp-peers-<n>-<suffix>" is the one Equinix Metal's cloud
// provider writes.
const (
	KeyNodeASN  = "node-asn"
	KeyPeerASN  = "peer-asn"
	KeyPeerIP   = "peer-ip"
	KeySourceIP = "src-ip"
	KeyPassword = "bgp-pass"
	KeyPeers    = "bgp-peers"
)

// ErrIncomplete means the Node carries some of the BGP annotations but not
// all of those needed (node ASN, source address and at least one peer).
var ErrIncomplete = errors.New("incomplete BGP node annotations")

// NodeSettings are the BGP settings found in one Node's annotations.
type NodeSettings struct {
	// AS is the node's AS (node-asn).
	AS uint32
	// SourceIP is the node's address for sessions and, when IPv4, its
	// router ID (src-ip).
	SourceIP netip.Addr
	// Peers are the neighbours (peer-ip with peer-asn and bgp-pass,
	// bgp-peers, and the indexed form).
	Peers []Peer
}

var indexed = regexp.MustCompile(`^bgp-peers-([0-9]{1,4})-(node-asn|peer-asn|peer-ip|src-ip|bgp-pass)$`)

// FromAnnotations reads the BGP settings under prefix ("kube-vip.io",
// "metal.equinix.com", ...) from a Node's annotations. found is false when
// none of the keys is present. A Node with some keys but not all needed
// returns an error wrapping ErrIncomplete; a malformed value returns one
// wrapping ErrInvalid.
func FromAnnotations(prefix string, ann map[string]string) (s NodeSettings, found bool, err error) {
	prefix = strings.TrimSuffix(strings.TrimSpace(prefix), "/")
	if prefix == "" {
		return s, false, nil
	}
	get := func(suffix string) (string, bool) {
		v, ok := ann[prefix+"/"+suffix]
		return strings.TrimSpace(v), ok
	}
	bad := func(key string, e error) error {
		return fmt.Errorf("%w: annotation %s/%s: %v", ErrInvalid, prefix, key, e)
	}

	// The indexed form, grouped by index.
	groups := map[int]map[string]string{}
	for k, v := range ann {
		rest, ok := strings.CutPrefix(k, prefix+"/")
		if !ok {
			continue
		}
		m := indexed.FindStringSubmatch(rest)
		if m == nil {
			continue
		}
		n, _ := strconv.Atoi(m[1])
		if groups[n] == nil {
			groups[n] = map[string]string{}
		}
		groups[n][m[2]] = strings.TrimSpace(v)
	}
	plain := map[string]string{}
	for _, k := range []string{KeyNodeASN, KeyPeerASN, KeyPeerIP, KeySourceIP, KeyPassword} {
		if v, ok := get(k); ok {
			plain[k] = v
		}
	}
	list, hasList := get(KeyPeers)
	if len(plain) == 0 && len(groups) == 0 && !hasList {
		return s, false, nil
	}
	found = true

	// Node-wide values may come from the plain keys or any group, and must agree.
	setAS := func(key, v string) error {
		as, err := ParseAS(v)
		if err != nil {
			return bad(key, err)
		}
		if s.AS != 0 && s.AS != as {
			return bad(key, fmt.Errorf("node AS %d disagrees with %d given elsewhere", as, s.AS))
		}
		s.AS = as
		return nil
	}
	setSource := func(key, v string) error {
		a, err := netip.ParseAddr(v)
		if err != nil || a.IsUnspecified() || a.IsMulticast() || a.Zone() != "" {
			return bad(key, fmt.Errorf("%q is not a unicast address", v))
		}
		a = a.Unmap()
		if s.SourceIP.IsValid() && s.SourceIP != a {
			return bad(key, fmt.Errorf("source address %s disagrees with %s given elsewhere", a, s.SourceIP))
		}
		s.SourceIP = a
		return nil
	}
	addPeers := func(group map[string]string, label string) error {
		ips := group[KeyPeerIP]
		if ips == "" {
			return nil
		}
		if group[KeyPeerASN] == "" {
			return fmt.Errorf("%w: %s%s is set but %s%s is missing", ErrIncomplete, label, KeyPeerIP, label, KeyPeerASN)
		}
		as, err := ParseAS(group[KeyPeerASN])
		if err != nil {
			return bad(label+KeyPeerASN, err)
		}
		var pass string
		if enc := group[KeyPassword]; enc != "" {
			b, err := base64.StdEncoding.DecodeString(enc)
			if err != nil {
				return bad(label+KeyPassword, fmt.Errorf("not base64: %v", err))
			}
			pass = string(b)
		}
		for _, ip := range strings.Split(ips, ",") {
			ip = strings.TrimSpace(ip)
			if ip == "" {
				continue
			}
			a, err := netip.ParseAddr(strings.Trim(ip, "[]"))
			if err != nil {
				return bad(label+KeyPeerIP, fmt.Errorf("%q is not an address", ip))
			}
			p := Peer{Address: a.Unmap(), Port: DefaultPort, AS: as, Password: pass}
			if err := p.validate(); err != nil {
				return bad(label+KeyPeerIP, err)
			}
			s.Peers = append(s.Peers, p)
		}
		return nil
	}

	if v, ok := plain[KeyNodeASN]; ok && v != "" {
		if err := setAS(KeyNodeASN, v); err != nil {
			return s, true, err
		}
	}
	if v, ok := plain[KeySourceIP]; ok && v != "" {
		if err := setSource(KeySourceIP, v); err != nil {
			return s, true, err
		}
	}
	if err := addPeers(plain, ""); err != nil {
		return s, true, err
	}
	idx := make([]int, 0, len(groups))
	for n := range groups {
		idx = append(idx, n)
	}
	sort.Ints(idx)
	for _, n := range idx {
		g := groups[n]
		label := fmt.Sprintf("bgp-peers-%d-", n)
		if v := g[KeyNodeASN]; v != "" {
			if err := setAS(label+KeyNodeASN, v); err != nil {
				return s, true, err
			}
		}
		if v := g[KeySourceIP]; v != "" {
			if err := setSource(label+KeySourceIP, v); err != nil {
				return s, true, err
			}
		}
		if err := addPeers(g, label); err != nil {
			return s, true, err
		}
	}
	if hasList && list != "" {
		ps, err := ParsePeers(list)
		if err != nil {
			return s, true, bad(KeyPeers, errors.New(strings.TrimPrefix(err.Error(), ErrInvalid.Error()+": ")))
		}
		s.Peers = append(s.Peers, ps...)
	}

	seen := map[netip.Addr]bool{}
	for _, p := range s.Peers {
		if seen[p.Address] {
			return s, true, fmt.Errorf("%w: annotations under %s/ list peer %s twice", ErrInvalid, prefix, p.Address)
		}
		seen[p.Address] = true
	}
	var missing []string
	if s.AS == 0 {
		missing = append(missing, prefix+"/"+KeyNodeASN)
	}
	if !s.SourceIP.IsValid() {
		missing = append(missing, prefix+"/"+KeySourceIP)
	}
	if len(s.Peers) == 0 {
		missing = append(missing, prefix+"/"+KeyPeerIP+" (with "+KeyPeerASN+") or "+prefix+"/"+KeyPeers)
	}
	if len(missing) > 0 {
		return s, true, fmt.Errorf("%w: missing %s", ErrIncomplete, strings.Join(missing, ", "))
	}
	return s, true, nil
}

// Apply returns base with the node's settings laid over it: the node AS,
// the source address (and router ID when it is IPv4), and the peers, which
// replace base's.
func (s NodeSettings) Apply(base Config) Config {
	if s.AS != 0 {
		base.AS = s.AS
	}
	if s.SourceIP.IsValid() {
		base.SourceIP = s.SourceIP
		if s.SourceIP.Is4() {
			base.RouterID = s.SourceIP
		}
	}
	if len(s.Peers) > 0 {
		base.Peers = append([]Peer(nil), s.Peers...)
	}
	return base
}
