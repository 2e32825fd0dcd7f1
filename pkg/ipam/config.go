package ipam

import (
	"fmt"
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
	// KeyAllowStaticOutsidePools holds a bool: whether a Service may request
	// a static address outside every pool. A ConfigMap without it keeps
	// kube-vip's behaviour (true, see Config.Legacy); vip's own installs set
	// it to false. An address inside a pool that does not serve the
	// Service's namespace is refused whatever it says.
	KeyAllowStaticOutsidePools = "allow-static-outside-pools"
	// KeyPrefixAllowStaticOutsidePools starts keys holding a bool for one
	// namespace: allow-static-outside-pools-<namespace> overrides
	// allow-static-outside-pools for that namespace alone.
	KeyPrefixAllowStaticOutsidePools = KeyAllowStaticOutsidePools + "-"
	// KeyPrefixAllowDHCP starts keys holding a bool: whether Services of that
	// scope (a namespace, or GlobalScope) may request 0.0.0.0, an address by
	// DHCP. Without any such key DHCP requests are allowed only where a pool
	// holds the 0.0.0.0/32 marker, or everywhere when the ConfigMap is a
	// legacy one (no allow-static-outside-pools key).
	KeyPrefixAllowDHCP = "allow-dhcp-"
	// KeySkipDot0Dot255 holds a bool (default true): never hand out an IPv4
	// address ending in .0 or .255 from a pool, as kube-vip-cloud-provider
	// does. Requested addresses are not affected.
	KeySkipDot0Dot255 = "skip-dot0-dot255"
	// KeyPrefixFallthrough starts keys holding a bool: whether a namespace
	// that has pools of its own also gets addresses from the global pools
	// once its own are full (fallthrough-<namespace>, or fallthrough-global
	// for every namespace). Default false: a namespace pool is a cap.
	KeyPrefixFallthrough = "fallthrough-"
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
	outsideSet  bool // allow-static-outside-pools is present
	outsideNS   map[string]bool
	dhcpAllow   map[string]bool
	fallthru    map[string]bool
	keepDot0    bool // skip-dot0-dot255 is false
}

// pool is the merged content of one cidr-/range- key.
type pool struct {
	name  string
	scope string
	dhcp  bool                // holds the 0.0.0.0/32 DHCP marker
	rr    [2][]netipx.IPRange // per family: sorted, disjoint, merged
	// ends are never picked: the network and broadcast address of each IPv4
	// CIDR entry (/30 and wider) and the subnet-router anycast address of
	// each IPv6 CIDR entry (/126 and wider).
	ends map[netip.Addr]struct{}
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
		pools:     map[string]*pool{},
		byScope:   map[string][]*pool{},
		share:     map[string]bool{},
		ifaces:    map[string]string{},
		outsideNS: map[string]bool{},
		dhcpAllow: map[string]bool{},
		fallthru:  map[string]bool{},
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
	_, c.outsideSet = data[KeyAllowStaticOutsidePools]
	skipDot0 := true
	parseBool(KeySkipDot0Dot255, &skipDot0)
	c.keepDot0 = !skipDot0
	scopedBool := func(key, prefix string, dst map[string]bool) {
		scope := strings.TrimPrefix(key, prefix)
		var b bool
		before := len(errs)
		parseBool(key, &b)
		if scope != "" && len(errs) == before {
			dst[scope] = b
		}
	}
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
			scopedBool(key, KeyPrefixAllowShare, c.share)
		case strings.HasPrefix(key, KeyPrefixAllowStaticOutsidePools):
			scopedBool(key, KeyPrefixAllowStaticOutsidePools, c.outsideNS)
		case strings.HasPrefix(key, KeyPrefixAllowDHCP):
			scopedBool(key, KeyPrefixAllowDHCP, c.dhcpAllow)
		case strings.HasPrefix(key, KeyPrefixFallthrough):
			scopedBool(key, KeyPrefixFallthrough, c.fallthru)
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
	p := &pool{name: key, scope: scope, ends: map[netip.Addr]struct{}{}}
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
			for _, x := range cidrEnds(entry) {
				p.ends[x] = struct{}{}
			}
		}
	}
	for i := range b {
		set, _ := b[i].IPSet() // only valid ranges were added
		p.rr[i] = set.Ranges()
	}
	return p, errs
}

// cidrEnds returns the addresses of a CIDR entry that are never picked: the
// network and broadcast address of an IPv4 prefix of /30 or wider (a /31 has
// none, RFC 3021), the subnet-router anycast address (RFC 4291 2.6.1) of an
// IPv6 prefix of /126 or wider (a /127 has none, RFC 6164).
func cidrEnds(entry string) []netip.Addr {
	pfx, err := netip.ParsePrefix(entry)
	if err != nil {
		return nil
	}
	r := netipx.RangeOfPrefix(pfx.Masked())
	switch {
	case pfx.Addr().Is4() && pfx.Bits() <= 30:
		return []netip.Addr{r.From(), r.To()}
	case pfx.Addr().Is6() && pfx.Bits() <= 126:
		return []netip.Addr{r.From()}
	}
	return nil
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

// eligible returns the pools vip picks from for namespace ns, in search
// order: the namespace's own cidr and range pools; the global ones when the
// namespace has no usable pool of its own, or when fallthrough-<ns> (or
// fallthrough-global) lets it spill over.
func (c *Config) eligible(ns string) []*pool {
	if c == nil {
		return nil
	}
	var out []*pool
	if ns != GlobalScope {
		for _, p := range c.byScope[ns] {
			if p.has(IPv4) || p.has(IPv6) {
				out = append(out, p)
			}
		}
		if len(out) > 0 && !c.Fallthrough(ns) {
			return out
		}
	}
	return append(out, c.byScope[GlobalScope]...)
}

// Fallthrough reports whether a namespace with pools of its own also gets
// addresses from the global pools: fallthrough-<ns>, else
// fallthrough-global, else false.
func (c *Config) Fallthrough(ns string) bool {
	if c == nil {
		return false
	}
	if b, ok := c.fallthru[ns]; ok {
		return b
	}
	return c.fallthru[GlobalScope]
}

// CheckRequested says whether a Service of namespace ns may request x as far
// as the pools go (never-assignable addresses and other holders are checked
// elsewhere). An address inside a pool of another namespace is refused with
// ErrOtherPool unless a pool of ns holds it too, whatever
// allow-static-outside-pools says. An address in no pool of ns nor of
// GlobalScope is refused with ErrOutsidePools unless AllowStaticOutside(ns).
// The error never names another namespace.
func (c *Config) CheckRequested(ns string, x netip.Addr) error {
	if c == nil {
		return nil
	}
	x = x.Unmap()
	inOwn, inGlobal, inOther := false, false, false
	for _, p := range c.pools {
		if !p.contains(x) {
			continue
		}
		switch p.scope {
		case ns:
			inOwn = true
		case GlobalScope:
			inGlobal = true
		default:
			inOther = true
		}
	}
	switch {
	case inOwn:
		return nil
	case inOther:
		return fmt.Errorf("%s lies in an address pool that does not serve namespace %q: %w", x, ns, ErrOtherPool)
	case inGlobal || c.AllowStaticOutside(ns):
		return nil
	}
	key := KeyAllowStaticOutsidePools
	if _, ok := c.outsideNS[ns]; ok {
		key = KeyPrefixAllowStaticOutsidePools + ns
	}
	return fmt.Errorf("%s is not in a pool of namespace %q and %s is false: %w", x, ns, key, ErrOutsidePools)
}

// AllowStaticOutside reports whether Services of namespace ns may request
// addresses outside every pool: allow-static-outside-pools-<ns>, else
// allow-static-outside-pools, else true (kube-vip's behaviour).
func (c *Config) AllowStaticOutside(ns string) bool {
	if c == nil {
		return true
	}
	if b, ok := c.outsideNS[ns]; ok {
		return b
	}
	return !c.denyOutside
}

// Legacy reports whether the ConfigMap lacks allow-static-outside-pools, as
// kube-vip-cloud-provider's do: any namespace may then request any address
// that no pool of another namespace holds.
func (c *Config) Legacy() bool { return c == nil || !c.outsideSet }

// DHCPAllowed reports whether Services of namespace ns may request 0.0.0.0
// (an address by DHCP): allow-dhcp-<ns>, else allow-dhcp-global; without
// either, when a pool serving ns holds the 0.0.0.0/32 marker or the
// ConfigMap is a legacy one.
func (c *Config) DHCPAllowed(ns string) bool {
	if c == nil {
		return true
	}
	if b, ok := c.dhcpAllow[ns]; ok {
		return b
	}
	if b, ok := c.dhcpAllow[GlobalScope]; ok {
		return b
	}
	return c.Legacy() || c.DHCP(ns)
}

// SkipDot0Dot255 reports whether IPv4 addresses ending in .0 or .255 are
// skipped when picking from a pool (skip-dot0-dot255, default true).
func (c *Config) SkipDot0Dot255() bool { return c == nil || !c.keepDot0 }

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

// InAnyPool reports whether any pool, of any scope, holds a.
func (c *Config) InAnyPool(a netip.Addr) bool {
	if c == nil {
		return false
	}
	a = a.Unmap()
	for _, p := range c.pools {
		if p.contains(a) {
			return true
		}
	}
	return false
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

// AllowStaticOutsidePools reports whether allow-static-outside-pools allows
// static requests outside the pools (default true); see AllowStaticOutside
// for the per-namespace answer.
func (c *Config) AllowStaticOutsidePools() bool { return c == nil || !c.denyOutside }
