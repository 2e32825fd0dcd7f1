package bgpconfig

import (
	"fmt"
	"strconv"
	"strings"
)

// wellKnown are the RFC 1997 / RFC 7999 / RFC 8326 community names.
var wellKnown = map[string]uint32{
	"no-export":           0xFFFFFF01,
	"no-advertise":        0xFFFFFF02,
	"no-export-subconfed": 0xFFFFFF03,
	"local-as":            0xFFFFFF03,
	"no-peer":             0xFFFFFF04,
	"blackhole":           0xFFFF029A,
	"graceful-shutdown":   0xFFFF0000,
}

// ParseCommunities parses a comma-separated list of standard communities,
// each "asn:value" (two 16-bit numbers) or a well-known name such as
// no-export.
func ParseCommunities(s string) ([]uint32, error) {
	var out []uint32
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if v, ok := wellKnown[strings.ToLower(f)]; ok {
			out = append(out, v)
			continue
		}
		hi, lo, ok := strings.Cut(f, ":")
		a, err1 := strconv.ParseUint(hi, 10, 16)
		b, err2 := strconv.ParseUint(lo, 10, 16)
		if !ok || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("%w: community %q: want asn:value with two numbers up to 65535, or a well-known name", ErrInvalid, f)
		}
		out = append(out, uint32(a)<<16|uint32(b))
	}
	return out, nil
}

// ParseLargeCommunities parses a comma-separated list of large communities,
// each "global:local1:local2" (three 32-bit numbers).
func ParseLargeCommunities(s string) ([]LargeCommunity, error) {
	var out []LargeCommunity
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		parts := strings.Split(f, ":")
		var n [3]uint64
		ok := len(parts) == 3
		for i := 0; ok && i < 3; i++ {
			var err error
			n[i], err = strconv.ParseUint(parts[i], 10, 32)
			ok = err == nil
		}
		if !ok {
			return nil, fmt.Errorf("%w: large community %q: want global:local1:local2 with numbers up to 4294967295", ErrInvalid, f)
		}
		out = append(out, LargeCommunity{uint32(n[0]), uint32(n[1]), uint32(n[2])})
	}
	return out, nil
}
