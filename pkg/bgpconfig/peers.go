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
//
// An entry may carry a password, so errors never echo an entry or any part
// of it: they name the peer's position in the list and the field that is
// wrong (a *PeerError), in words fixed in this file.
func ParsePeers(s string) ([]Peer, error) {
	var out []Peer
	for i, entry := range strings.Split(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		p, err := parsePeer(entry)
		if err != nil {
			err.Position = i + 1
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// PeerError is a refused peer list entry: its position (1-based, counting
// empty entries) and what is wrong, never the entry's text.
type PeerError struct {
	// Position is the entry's place in the comma-separated list.
	Position int
	// Field names the wrong part ("address", "AS", "multihop", ...).
	Field string
	// Problem is a fixed description of what is wrong with it.
	Problem string
}

func (e *PeerError) Error() string {
	return fmt.Sprintf("%v: peer %d: %s: %s", ErrInvalid, e.Position, e.Field, e.Problem)
}

// Unwrap makes errors.Is(err, ErrInvalid) hold.
func (e *PeerError) Unwrap() error { return ErrInvalid }

// Reasons of PeerError, fixed words that never include the input.
const (
	problemNoBracket   = "no ']' closing the IPv6 address"
	problemBadIPv6     = "not an IPv6 address inside the brackets"
	problemIPv4Bracket = "an IPv4 address in brackets"
	problemAfterBrack  = "expected ':' and the AS after ']'"
	problemNeedBracket = "an IPv6 address must be written in brackets, as in [fd00::1]:65000"
	problemBadAddr     = "want an IPv4 address or a bracketed IPv6 address"
	problemNoAS        = "missing (format address:AS:password:multihop)"
	problemBadAS       = "want 1-4294967295"
	problemBadMultihop = "want true, false or a TTL from 2 to 255"
	problemBadPort     = "want 1-65535"
	problemBFD         = "BFD options (field 7) are not supported"
	problemMPBGP       = "MP-BGP options (field 6) are not supported; vip picks next hops itself (see --bgp-nexthop, --bgp-nexthop6)"
	problemTooMany     = "too many fields"
	problemPwLong      = "TCP MD5 passwords are at most 80 bytes"
)

func parsePeer(entry string) (Peer, *PeerError) {
	p := Peer{Port: DefaultPort}
	bad := func(field, problem string) (Peer, *PeerError) {
		return p, &PeerError{Field: field, Problem: problem}
	}
	var fields []string
	if strings.HasPrefix(entry, "[") {
		end := strings.IndexByte(entry, ']')
		if end < 0 {
			return bad("address", problemNoBracket)
		}
		a, err := netip.ParseAddr(entry[1:end])
		if err != nil {
			return bad("address", problemBadIPv6)
		}
		if a.Is4() {
			return bad("address", problemIPv4Bracket)
		}
		p.Address = a.Unmap()
		rest := entry[end+1:]
		if !strings.HasPrefix(rest, ":") {
			return bad("AS", problemAfterBrack)
		}
		fields = strings.Split(rest[1:], ":")
	} else {
		f := strings.Split(entry, ":")
		a, err := netip.ParseAddr(f[0])
		if err != nil {
			if looksLikeIPv6(entry) {
				return bad("address", problemNeedBracket)
			}
			return bad("address", problemBadAddr)
		}
		p.Address = a
		fields = f[1:]
	}
	if err := (Peer{Address: p.Address, AS: 1}).validate(); err != nil {
		return bad("address", addressProblem(p.Address))
	}
	if len(fields) == 0 || fields[0] == "" {
		return bad("AS", problemNoAS)
	}
	as, err := ParseAS(fields[0])
	if err != nil {
		return bad("AS", problemBadAS)
	}
	p.AS = as
	if len(fields) > 1 {
		p.Password = fields[1]
		if len(p.Password) > 80 {
			return bad("password", problemPwLong)
		}
	}
	if len(fields) > 2 {
		if p.MultihopTTL, err = ParseMultihop(fields[2]); err != nil {
			return bad("multihop", problemBadMultihop)
		}
	}
	if len(fields) > 3 && fields[3] != "" {
		port, err := strconv.ParseUint(fields[3], 10, 16)
		if err != nil || port == 0 {
			return bad("port", problemBadPort)
		}
		p.Port = uint16(port)
	}
	switch {
	case len(fields) > 5 && fields[5] != "":
		return bad("field 7", problemBFD)
	case len(fields) > 4 && fields[4] != "":
		return bad("field 6", problemMPBGP)
	case len(fields) > 6:
		return bad("entry", problemTooMany)
	}
	if err := p.validate(); err != nil {
		// Only the address and the password length are left to check, and
		// both were checked above; keep the message free of the entry.
		return bad("entry", "not a usable peer")
	}
	return p, nil
}

// addressProblem says, in fixed words, why a parsed peer address is not
// usable.
func addressProblem(a netip.Addr) string {
	switch {
	case a.Zone() != "":
		return "a zoned address is not supported"
	default:
		return "not a unicast address"
	}
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
