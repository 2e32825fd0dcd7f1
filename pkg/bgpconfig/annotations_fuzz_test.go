package bgpconfig

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// FuzzFromAnnotations feeds arbitrary Node annotations (one key=value per
// line, keys under the prefix "p"): no panic; a refusal wraps ErrInvalid or
// ErrIncomplete; accepted settings have valid peers and no peer twice.
func FuzzFromAnnotations(f *testing.F) {
	for _, s := range []string{
		"node-asn=65001\nsrc-ip=10.0.0.5\npeer-asn=65000\npeer-ip=10.0.0.1,10.0.0.2\nbgp-pass=c2VjcmV0",
		"bgp-peers-0-node-asn=65001\nbgp-peers-0-peer-ip=10.0.0.1\nbgp-peers-0-peer-asn=1\nbgp-peers-1-peer-ip=fd00::1\nbgp-peers-1-peer-asn=2",
		"bgp-peers=10.0.0.1:65000::false,[fd00::1]:65000:pw:true",
		"peer-ip=10.0.0.1",
		"node-asn=x",
		"bgp-pass=!!notbase64",
		"bgp-peers-9999-peer-ip=10.0.0.1\nbgp-peers-9999-peer-asn=4294967295",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		ann := map[string]string{}
		for _, line := range strings.Split(in, "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				ann["p/"+k] = v
			}
		}
		s, found, err := FromAnnotations("p", ann)
		if err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrIncomplete) {
				t.Fatalf("error %v wraps neither ErrInvalid nor ErrIncomplete", err)
			}
			return
		}
		if !found && len(s.Peers) > 0 {
			t.Fatalf("not found but peers %v", s.Peers)
		}
		seen := map[string]bool{}
		for _, p := range s.Peers {
			if err := p.validate(); err != nil {
				t.Fatalf("accepted invalid peer: %v", err)
			}
			if seen[p.Key()] {
				t.Fatalf("peer %s twice", p.Key())
			}
			seen[p.Key()] = true
		}
	})
}

// FuzzCommunities: no panic, refusals wrap ErrInvalid, and what is accepted
// prints back to something that parses to the same values.
func FuzzCommunities(f *testing.F) {
	for _, s := range []string{"64512:100,no-export", "no-advertise, 1:2", "65536:1", "1:2:3", "x", "4294967295:0:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		if cs, err := ParseCommunities(in); err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("communities: error %v does not wrap ErrInvalid", err)
			}
		} else {
			var parts []string
			for _, c := range cs {
				parts = append(parts, formatCommunity(c))
			}
			again, err := ParseCommunities(strings.Join(parts, ","))
			if err != nil || len(again) != len(cs) {
				t.Fatalf("round trip of %v: %v, %v", cs, again, err)
			}
		}
		if ls, err := ParseLargeCommunities(in); err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("large communities: error %v does not wrap ErrInvalid", err)
			}
		} else {
			var parts []string
			for _, c := range ls {
				parts = append(parts, c.String())
			}
			again, err := ParseLargeCommunities(strings.Join(parts, ","))
			if err != nil || len(again) != len(ls) {
				t.Fatalf("round trip of %v: %v, %v", ls, again, err)
			}
		}
	})
}

func formatCommunity(c uint32) string { return fmt.Sprintf("%d:%d", c>>16, c&0xffff) }
