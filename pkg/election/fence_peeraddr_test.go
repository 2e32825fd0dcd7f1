package election

import (
	"context"
	"net/netip"
	"strings"
	"testing"
)

// TestProbeOnlyNodeAddresses: with PeerAddressAllowed, a peer whose
// heartbeat publishes a health URL at an address that is no node's is not
// probed (it counts as no answer); allowed addresses are probed as before.
func TestProbeOnlyNodeAddresses(t *testing.T) {
	var probed []string
	u := newUnit(t, newFakeClient(), "a", func(o *Options) {
		o.PeerAddressAllowed = func(a netip.Addr) bool { return a == netip.MustParseAddr("10.0.0.2") }
		o.Probe = func(_ context.Context, url string) (Health, error) {
			probed = append(probed, url)
			return Health{Node: "b", APIReachable: true}, nil
		}
	})
	res := u.probePeers(t.Context(), map[string]string{
		"b": "http://10.0.0.2:2112/vip/election",
		"c": "http://10.99.0.1:2112/vip/election",
		"d": "http://router.example:2112/vip/election",
	})
	if len(probed) != 1 || !strings.HasPrefix(probed[0], "http://10.0.0.2:2112/") {
		t.Fatalf("probed %q, want only b's URL", probed)
	}
	for _, r := range res {
		switch r.node {
		case "b":
			if r.err != nil {
				t.Errorf("b: %v", r.err)
			}
		default:
			if r.err == nil || !strings.Contains(r.err.Error(), "no node's address") {
				t.Errorf("%s: err %v, want a refusal", r.node, r.err)
			}
		}
	}
}
