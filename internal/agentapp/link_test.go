package agentapp

import (
	"errors"
	"testing"

	"github.com/vip-lb/vip/pkg/agentconfig"
)

// TestLinkAddress: --link-address wins; without an interface the node's
// address (NODE_IP) is the link address, as the shipped manifests rely on;
// with neither the configuration is refused.
func TestLinkAddress(t *testing.T) {
	for _, tc := range []struct {
		name, link, node, want string
		err                    bool
	}{
		{name: "explicit", link: "10.0.0.5", node: "10.0.0.11", want: "10.0.0.5"},
		{name: "node address", node: "10.0.0.11", want: "10.0.0.11"},
		{name: "node address v6", node: "fd00::11", want: "fd00::11"},
		{name: "nothing", err: true},
		{name: "bad explicit", link: "eth0", err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := agentconfig.Default()
			c.Liveness.Mode, c.Liveness.Address, c.NodeAddress = agentconfig.LivenessLink, tc.link, tc.node
			got, err := linkAddress(c)
			if tc.err {
				if !errors.Is(err, agentconfig.ErrConfig) {
					t.Fatalf("got %v, %v; want a configuration error", got, err)
				}
				return
			}
			if err != nil || got.String() != tc.want {
				t.Fatalf("got %v, %v; want %s", got, err, tc.want)
			}
		})
	}
}
