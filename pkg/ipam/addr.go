package ipam

import (
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"go4.org/netipx"
)

// Family is an IP address family.
type Family uint8

// The two address families. The zero Family is invalid.
const (
	IPv4 Family = 4
	IPv6 Family = 6
)

// String returns "IPv4", "IPv6" or "Family(n)".
func (f Family) String() string {
	switch f {
	case IPv4:
		return "IPv4"
	case IPv6:
		return "IPv6"
	}
	return "Family(" + strconv.Itoa(int(f)) + ")"
}

// FamilyOf returns the family of a (IPv4-mapped IPv6 counts as IPv4).
func FamilyOf(a netip.Addr) Family {
	if a.Unmap().Is4() {
		return IPv4
	}
	return IPv6
}

// index maps a valid family to 0 (IPv4) or 1 (IPv6), for per-family arrays.
func (f Family) index() int {
	if f == IPv6 {
		return 1
	}
	return 0
}

func (f Family) valid() bool { return f == IPv4 || f == IPv6 }

var families = [2]Family{IPv4, IPv6}

// Port is one listening port of a Service, used to decide whether Services may
// share an address.
type Port struct {
	// Proto is the protocol, e.g. "TCP", "UDP" or "SCTP" (case-insensitive;
	// empty means TCP).
	Proto string
	// Port is the port number.
	Port uint16
}

// normalizePorts upper-cases protocols, defaults them to TCP, sorts and
// removes duplicates. The result never aliases in.
func normalizePorts(in []Port) []Port {
	out := make([]Port, 0, len(in))
	for _, p := range in {
		proto := strings.ToUpper(strings.TrimSpace(p.Proto))
		if proto == "" {
			proto = "TCP"
		}
		out = append(out, Port{Proto: proto, Port: p.Port})
	}
	slices.SortFunc(out, func(a, b Port) int {
		if c := strings.Compare(a.Proto, b.Proto); c != 0 {
			return c
		}
		return int(a.Port) - int(b.Port)
	})
	return slices.Compact(out)
}

// portsClash reports whether two Services with these (normalized) ports could
// not listen on one address. A Service without ports claims the whole address.
func portsClash(a, b []Port) bool {
	if len(a) == 0 || len(b) == 0 {
		return true
	}
	for _, p := range a {
		if _, ok := slices.BinarySearchFunc(b, p, func(x, y Port) int {
			if c := strings.Compare(x.Proto, y.Proto); c != 0 {
				return c
			}
			return int(x.Port) - int(y.Port)
		}); ok {
			return true
		}
	}
	return false
}

// forbiddenBlocks are never handed out: unspecified, loopback, link-local,
// multicast and the IPv4 limited broadcast address.
var forbiddenBlocks = []netipx.IPRange{
	netipx.RangeOfPrefix(netip.MustParsePrefix("0.0.0.0/32")),
	netipx.RangeOfPrefix(netip.MustParsePrefix("127.0.0.0/8")),
	netipx.RangeOfPrefix(netip.MustParsePrefix("169.254.0.0/16")),
	netipx.RangeOfPrefix(netip.MustParsePrefix("224.0.0.0/4")),
	netipx.RangeOfPrefix(netip.MustParsePrefix("255.255.255.255/32")),
	netipx.RangeOfPrefix(netip.MustParsePrefix("::/127")), // :: and ::1
	netipx.RangeOfPrefix(netip.MustParsePrefix("fe80::/10")),
	netipx.RangeOfPrefix(netip.MustParsePrefix("ff00::/8")),
}

// forbiddenBlock returns the built-in forbidden block containing a, if any, so
// a scan can jump over it in one step.
func forbiddenBlock(a netip.Addr) (netipx.IPRange, bool) {
	for _, r := range forbiddenBlocks {
		if r.Contains(a) {
			return r, true
		}
	}
	return netipx.IPRange{}, false
}

// BuiltinForbidden reports whether a is an address that is never a valid
// LoadBalancer address: unspecified, loopback, link-local, multicast or the
// IPv4 limited broadcast address. IPv4-mapped IPv6 addresses are unmapped first.
func BuiltinForbidden(a netip.Addr) bool {
	_, ok := forbiddenBlock(a.Unmap())
	return ok
}

// rangeSize returns the number of addresses in r as a float64 (exact up to
// 2^53, then rounded; an IPv6 /0 is about 3.4e38).
func rangeSize(r netipx.IPRange) float64 {
	f, t := r.From().As16(), r.To().As16()
	hi := be64(t[:8]) - be64(f[:8])
	lo := be64(t[8:]) - be64(f[8:])
	if be64(t[8:]) < be64(f[8:]) {
		hi-- // borrow
	}
	return float64(hi)*math.Exp2(64) + float64(lo) + 1
}

func be64(b []byte) uint64 {
	var v uint64
	for _, x := range b {
		v = v<<8 | uint64(x)
	}
	return v
}

// findRange returns the index of the range in sorted, disjoint rr that
// contains a, or -1.
func findRange(rr []netipx.IPRange, a netip.Addr) int {
	i, ok := slices.BinarySearchFunc(rr, a, func(r netipx.IPRange, a netip.Addr) int {
		if r.To().Less(a) {
			return -1
		}
		if a.Less(r.From()) {
			return 1
		}
		return 0
	})
	if !ok {
		return -1
	}
	return i
}
