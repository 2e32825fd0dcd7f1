package bgpconfig

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ParsePeers parses kube-vip's peer list: comma-separated entries
//
//	<address>:<AS>[:<password>[:<multihop>[:<port>]]]
//
// IPv6 addresses go in brackets ("[fd00::1]:65000"). multihop is a boolean
// ("true" means a TTL of DefaultMultihopTTL) or a TTL from 2 to 255; empty
// fields keep their defaults, and empty entries are skipped. kube-vip's
// later fields (MP-BGP and BFD options) are refused rather than ignored. A
// password cannot contain ':' or ','; use the password file for those.
func ParsePeers(s string) ([]Peer, error) {
	var out []Peer
	for i, entry := range strings.Split(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		p, err := parsePeer(entry)
		if err != nil {
			return nil, fmt.Errorf("%w: peer %d %q: %v", ErrInvalid, i+1, redact(entry), err)
		}
		out = append(out, p)
	}
	return out, nil
}

// redact hides the password field of a peer entry in error messages.
func redact(entry string) string {
	rest := entry
	prefix := ""
	if strings.HasPrefix(entry, "[") {
		if end := strings.IndexByte(entry, ']'); end >= 0 {
			prefix, rest = entry[:end+1], entry[end+1:]
		}
	}
	f := strings.Split(rest, ":")
	if len(f) >= 3 && f[2] != "" {
		f[2] = "***" // field 0 is the address, or empty after "]"
	}
	return prefix + strings.Join(f, ":")
}

func parsePeer(entry string) (Peer, error) {
	p := Peer{Port: DefaultPort}
	var fields []string
	if strings.HasPrefix(entry, "[") {
		end := strings.IndexByte(entry, ']')
		if end < 0 {
			return p, fmt.Errorf("no ']' closing the IPv6 address")
		}
		a, err := netip.ParseAddr(entry[1:end])
		if err != nil {
			return p, fmt.Errorf("bad address: %v", err)
		}
		if a.Is4() {
			return p, fmt.Errorf("IPv4 address %s in brackets", a)
		}
		p.Address = a.Unmap()
		rest := entry[end+1:]
		if !strings.HasPrefix(rest, ":") {
			return p, fmt.Errorf("expected ':' and the AS after ']'")
		}
		fields = strings.Split(rest[1:], ":")
	} else {
		f := strings.Split(entry, ":")
		a, err := netip.ParseAddr(f[0])
		if err != nil {
			if looksLikeIPv6(entry) {
				return p, fmt.Errorf("an IPv6 address must be written in brackets, as in [fd00::1]:65000")
			}
			return p, fmt.Errorf("bad address %q: want an IPv4 address or a bracketed IPv6 address", f[0])
		}
		p.Address = a
		fields = f[1:]
	}
	if err := (Peer{Address: p.Address, AS: 1}).validate(); err != nil {
		return p, err
	}
	if len(fields) == 0 || fields[0] == "" {
		return p, fmt.Errorf("the AS is missing (format address:AS:password:multihop)")
	}
	as, err := ParseAS(fields[0])
	if err != nil {
		return p, err
	}
	p.AS = as
	if len(fields) > 1 {
		p.Password = fields[1]
	}
	if len(fields) > 2 {
		if p.MultihopTTL, err = ParseMultihop(fields[2]); err != nil {
			return p, err
		}
	}
	if len(fields) > 3 && fields[3] != "" {
		port, err := strconv.ParseUint(fields[3], 10, 16)
		if err != nil || port == 0 {
			return p, fmt.Errorf("bad port %q", fields[3])
		}
		p.Port = uint16(port)
	}
	switch {
	case len(fields) > 5 && fields[5] != "":
		return p, fmt.Errorf("BFD options (field 7) are not supported")
	case len(fields) > 4 && fields[4] != "":
		return p, fmt.Errorf("MP-BGP options (field 6) are not supported; vip picks next hops itself (see --bgp-nexthop, --bgp-nexthop6)")
	case len(fields) > 6:
		return p, fmt.Errorf("too many fields (%d)", len(fields)+1)
	}
	return p, p.validate()
}

// ParseAS parses an AS number, 1 to 4294967295 (plain, not asdot).
func ParseAS(s string) (uint32, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 32)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("bad AS %q: want 1-4294967295", s)
	}
	return uint32(n), nil
}

// ParseMultihop parses a multihop setting: "" or a false boolean is 0 (a
// direct session), a true boolean is DefaultMultihopTTL, and a number from 2
// to 255 is that TTL.
func ParseMultihop(s string) (uint8, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	if b, err := strconv.ParseBool(s); err == nil {
		if b {
			return DefaultMultihopTTL, nil
		}
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 8)
	if err != nil || n < 2 {
		return 0, fmt.Errorf("bad multihop %q: want true, false or a TTL from 2 to 255", s)
	}
	return uint8(n), nil
}

// FormatPeers writes peers in the form ParsePeers reads. Passwords are
// written as they are; keep the result out of logs.
func FormatPeers(peers []Peer) string {
	var b strings.Builder
	for i, p := range peers {
		if i > 0 {
			b.WriteByte(',')
		}
		if p.Address.Is4() {
			b.WriteString(p.Address.String())
		} else {
			b.WriteString("[" + p.Address.String() + "]")
		}
		fmt.Fprintf(&b, ":%d:%s:", p.AS, p.Password)
		switch p.MultihopTTL {
		case 0:
			b.WriteString("false")
		case DefaultMultihopTTL:
			b.WriteString("true")
		default:
			b.WriteString(strconv.Itoa(int(p.MultihopTTL)))
		}
		if p.Port != 0 && p.Port != DefaultPort {
			fmt.Fprintf(&b, ":%d", p.Port)
		}
	}
	return b.String()
}

// looksLikeIPv6 reports whether entry starts with an IPv6 address written
// without brackets.
func looksLikeIPv6(entry string) bool {
	for i := len(entry); i > 0; i = strings.LastIndexByte(entry[:i], ':') {
		if a, err := netip.ParseAddr(entry[:i]); err == nil && a.Is6() {
			return true
		}
	}
	return false
}
