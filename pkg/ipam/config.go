package ipam

import (
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"go4.org/netipx"
)

// ConfigMap keys understood by ParseConfig. The prefixed keys take a scope
// suffix: a namespace name, or GlobalScope for pools that serve every
// namespace.
const (
	// KeyPrefixCIDR starts keys whose value is a comma-separated list of CIDRs.
	KeyPrefixCIDR = "cidr-"
	// KeyPrefixRange starts keys whose value is a comma-separated list of
	// "first-last" address ranges.
	KeyPrefixRange = "range-"
	// KeyPrefixAllowShare starts keys holding a bool: whether Services of that
	// scope may share one address when their ports differ.
	KeyPrefixAllowShare = "allow-share-"
	// KeyPrefixInterface starts keys naming the interface the addresses of that
	// scope are announced on.
	KeyPrefixInterface = "interface-"
	// KeySkipEndIPs holds a bool: skip the network and broadcast address of
	// every IPv4 CIDR entry.
	KeySkipEndIPs = "skip-end-ips-in-cidr"
	// KeySearchOrder is "asc" (default: lowest free address first) or "desc"
	// (highest free address first).
	KeySearchOrder = "search-order"
	// KeyAllowStaticOutsidePools holds a bool (default true): whether a
	// Service may request a static address outside the pools serving its
	// namespace.
	KeyAllowStaticOutsidePools = "allow-static-outside-pools"
	// GlobalScope is the scope suffix of pools and settings for all namespaces.
	GlobalScope = "global"
)

// dhcpMarker is the CIDR entry that kube-vip-cloud-provider documents as
// "give every LoadBalancer 0.0.0.0 and let the announcer use DHCP".
var dhcpMarker = netip.MustParsePrefix("0.0.0.0/32")

// Config is a parsed, immutable pools ConfigMap. The zero value has no pools.
type Config struct {
	pools       map[string]*pool   // by ConfigMap key
	byScope     map[string][]*pool // scope -> pools in search order (cidr, range)
	share       map[string]bool
	ifaces      map[string]string
	skipEnd     bool
	desc        bool
	denyOutside bool // inverted so that the zero Config has the default
}

// pool is the merged content of one cidr-/range- key.
type pool struct {
	name  string
	scope string
	dhcp  bool                // holds the 0.0.0.0/32 DHCP marker
	rr    [2][]netipx.IPRange // per family: sorted, disjoint, merged
}

func (p *pool) has(f Family) bool {
	return len(p.rr[f.index()]) > 0 || (f == IPv4 && p.dhcp)
}

func (p *pool) contains(a netip.Addr) bool {
	return findRange(p.rr[FamilyOf(a).index()], a) >= 0
}

// PoolInfo describes one family of one pool, for metrics.
type PoolInfo struct {
	// Name is the ConfigMap key of the pool, e.g. "cidr-global".
	Name string
	// Family is the address family this entry counts.
	Family Family
	// Size is the number of addresses of that family in the pool, after
	// merging overlaps and skipping CIDR end addresses when configured. It is
	// exact up to 2^53.
	Size float64
	// DHCP is true when the pool carries the 0.0.0.0/32 DHCP marker.
	DHCP bool
}

// ParseConfig parses the data of the pools ConfigMap. It never fails as a
// whole: each bad entry yields one error wrapping ErrBadEntry (an *EntryError)
// and is left out, while every other entry and key still applies. Unknown keys
// are ignored. Huge ranges (an IPv4 or IPv6 /0) are kept as ranges, never
// expanded. Errors come in key order, so the result is deterministic.
func ParseConfig(data map[string]string) (*Config, []error) {
	c := &Config{
		pools:   map[string]*pool{},
		byScope: map[string][]*pool{},
		share:   map[string]bool{},
		ifaces:  map[string]string{},
	}
	var errs []error
	parseBool := func(key string, dst *bool) {
		v, ok := data[key]
		if !ok {
			return
		}
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			errs = append(errs, badEntry(key, v, "not a bool (want true or false)"))
			return
		}
		*dst = b
	}
	// Settings that change how pool entries are read come first.
	parseBool(KeySkipEndIPs, &c.skipEnd)
	allowOutside := true
	parseBool(KeyAllowStaticOutsidePools, &allowOutside)
	c.denyOutside = !allowOutside
	if v, ok := data[KeySearchOrder]; ok {
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "desc":
			c.desc = true
		case "asc", "":
		default:
			errs = append(errs, badEntry(KeySearchOrder, v, "want asc or desc; using asc"))
		}
	}

	for _, key := range slices.Sorted(maps.Keys(data)) {
		val := data[key]
		switch {
		case strings.HasPrefix(key, KeyPrefixCIDR), strings.HasPrefix(key, KeyPrefixRange):
			scope := key[strings.IndexByte(key, '-')+1:]
			if scope == "" {
				errs = append(errs, badEntry(key, val, "key has no namespace or %q suffix", GlobalScope))
				continue
			}
			p, perrs := parsePool(key, scope, val, c.skipEnd)
			errs = append(errs, perrs...)
			c.pools[key] = p
		case strings.HasPrefix(key, KeyPrefixAllowShare):
			scope := strings.TrimPrefix(key, KeyPrefixAllowShare)
			var b bool
			before := len(errs)
			parseBool(key, &b)
			if scope != "" && len(errs) == before {
				c.share[scope] = b
			}
		case strings.HasPrefix(key, KeyPrefixInterface):
			scope := strings.TrimPrefix(key, KeyPrefixInterface)
			name := strings.TrimSpace(val)
			if reason := badInterfaceName(name); reason != "" {
				errs = append(errs, badEntry(key, val, "%s", reason))
				continue
			}
			if scope != "" {
				c.ifaces[scope] = name
			}
		}
	}
	// Search order inside a scope: cidr-<scope> before range-<scope>.
	for _, prefix := range []string{KeyPrefixCIDR, KeyPrefixRange} {
		for _, key := range slices.Sorted(maps.Keys(c.pools)) {
			if p := c.pools[key]; strings.HasPrefix(key, prefix) {
				c.byScope[p.scope] = append(c.byScope[p.scope], p)
			}
		}
	}
	return c, errs
}

// parsePool parses the comma-separated entries of one cidr-/range- key. The
// entry syntax decides its kind ("a-b" range, "a/n" CIDR, or a lone address),
// whatever the key prefix, as kube-vip-cloud-provider does.
func parsePool(key, scope, val string, skipEnd bool) (*pool, []error) {
	p := &pool{name: key, scope: scope}
	var errs []error
	var b [2]netipx.IPSetBuilder
	for entry := range strings.SplitSeq(val, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		r, dhcp, reason := parseEntry(entry, skipEnd)
		switch {
		case reason != "":
			errs = append(errs, badEntry(key, entry, "%s", reason))
		case dhcp:
			p.dhcp = true
		case r.IsValid():
			b[FamilyOf(r.From()).index()].AddRange(r)
		}
	}
	for i := range b {
		set, _ := b[i].IPSet() // only valid ranges were added
		p.rr[i] = set.Ranges()
	}
	return p, errs
}

// parseEntry parses one pool entry into a range, or reports the DHCP marker,
// or says why the entry is bad.
func parseEntry(entry string, skipEnd bool) (r netipx.IPRange, dhcp bool, reason string) {
	r, dhcp, reason = parseEntryRange(entry, skipEnd)
	if reason == "" && !dhcp && wholeFamily(r) {
		return netipx.IPRange{}, false, reasonWholeFamily
	}
	return r, dhcp, reason
}

const reasonWholeFamily = "covers every address of its family (a /0), including ones this network does not own; give the prefix the cluster really has"

// wholeFamily reports whether r is 0.0.0.0-255.255.255.255 or ::-ffff:….
func wholeFamily(r netipx.IPRange) bool {
	p, ok := r.Prefix()
	return r.IsValid() && ok && p.Bits() == 0
}

func parseEntryRange(entry string, skipEnd bool) (r netipx.IPRange, dhcp bool, reason string) {
	if from, to, ok := strings.Cut(entry, "-"); ok {
		a, reason := parseAddr(strings.TrimSpace(from))
		if reason != "" {
			return r, false, reason
		}
		z, reason := parseAddr(strings.TrimSpace(to))
		if reason != "" {
			return r, false, reason
		}
		if a.Is4() != z.Is4() {
			return r, false, "range mixes IPv4 and IPv6"
		}
		if z.Less(a) {
			return r, false, "range end is lower than its start"
		}
		return netipx.IPRangeFrom(a, z), false, ""
	}
	if strings.Contains(entry, "/") {
		pfx, err := netip.ParsePrefix(entry)
		if err != nil {
			return r, false, "not a CIDR: " + err.Error()
		}
		if pfx.Addr().Is4In6() {
			return r, false, "IPv4-mapped IPv6 prefixes are not supported; write the IPv4 prefix"
		}
		if pfx == dhcpMarker {
			return r, true, ""
		}
		if pfx.Bits() == 0 {
			return r, false, reasonWholeFamily
		}
		r = netipx.RangeOfPrefix(pfx.Masked())
		// Network and broadcast addresses exist only in IPv4 subnets of /30 or
		// wider; /31 (RFC 3021) and /32 have none.
		if skipEnd && pfx.Addr().Is4() && pfx.Bits() <= 30 {
			r = netipx.IPRangeFrom(r.From().Next(), r.To().Prev())
		}
		return r, false, ""
	}
	a, reason := parseAddr(entry)
	if reason != "" {
		return r, false, reason
	}
	return netipx.IPRangeFrom(a, a), false, ""
}

func parseAddr(s string) (netip.Addr, string) {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return a, "not an address: " + err.Error()
	case a.Zone() != "":
		return a, "addresses with a zone are not supported"
	case a.Is4In6():
		return a, "IPv4-mapped IPv6 addresses are not supported; write the IPv4 address"
	}
	return a, ""
}

// badInterfaceName returns why name cannot be a Linux interface name, or "".
func badInterfaceName(name string) string {
	switch {
	case name == "":
		return "empty interface name"
	case len(name) > 15:
		return "interface name longer than 15 bytes"
	case name == "." || name == "..":
		return "invalid interface name"
	case strings.ContainsAny(name, "/: \t\n\r\x00"):
		return "interface name contains '/', ':' or whitespace"
	}
	return ""
}

// Pools lists every non-empty pool family, sorted by name then family.
func (c *Config) Pools() []PoolInfo {
	var out []PoolInfo
	for _, name := range slices.Sorted(maps.Keys(c.pools)) {
		p := c.pools[name]
		for _, f := range families {
			if !p.has(f) {
				continue
			}
			info := PoolInfo{Name: name, Family: f, DHCP: f == IPv4 && p.dhcp}
			for _, r := range p.rr[f.index()] {
				info.Size += rangeSize(r)
			}
			out = append(out, info)
		}
	}
	return out
}

// eligible returns the pools serving namespace ns in search order: the
// namespace's cidr and range pools, then the global ones.
func (c *Config) eligible(ns string) []*pool {
	if c == nil {
		return nil
	}
	out := slices.Clone(c.byScope[ns])
	if ns != GlobalScope {
		out = append(out, c.byScope[GlobalScope]...)
	}
	return out
}

// DHCP reports whether namespace ns gets its IPv4 addresses by DHCP: the
// first pool serving it with IPv4 holds the 0.0.0.0/32 marker, so the
// allocator answers 0.0.0.0 there.
func (c *Config) DHCP(ns string) bool {
	for _, p := range c.eligible(ns) {
		if p.has(IPv4) {
			return p.dhcp
		}
	}
	return false
}

// PoolOf returns the name of the first pool, in the search order of namespace
// ns, that contains a.
func (c *Config) PoolOf(ns string, a netip.Addr) (string, bool) {
	a = a.Unmap()
	for _, p := range c.eligible(ns) {
		if p.contains(a) {
			return p.name, true
		}
	}
	return "", false
}

// Shareable reports whether Services of namespace ns may share addresses:
// allow-share-<ns> if set, else allow-share-global, else false.
func (c *Config) Shareable(ns string) bool {
	if c == nil {
		return false
	}
	if b, ok := c.share[ns]; ok {
		return b
	}
	return c.share[GlobalScope]
}

// Interface returns the interface configured for namespace ns
// (interface-<ns>, else interface-global), or "".
func (c *Config) Interface(ns string) string {
	if c == nil {
		return ""
	}
	if name, ok := c.ifaces[ns]; ok {
		return name
	}
	return c.ifaces[GlobalScope]
}

// Descending reports whether search-order is desc.
func (c *Config) Descending() bool { return c != nil && c.desc }

// SkipEndIPsInCIDR reports whether skip-end-ips-in-cidr is set.
func (c *Config) SkipEndIPsInCIDR() bool { return c != nil && c.skipEnd }

// AllowStaticOutsidePools reports whether static requests may name addresses
// outside the pools serving their namespace (default true).
func (c *Config) AllowStaticOutsidePools() bool { return c == nil || !c.denyOutside }
