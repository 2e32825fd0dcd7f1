package agentconfig

import (
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vip-lb/vip/pkg/bgpconfig"
)

// parseBGP parses as parseConfig does, on node n1.
func parseBGP(t *testing.T, args []string, env map[string]string) (Config, error) {
	t.Helper()
	return parseConfig(t, append(args[:len(args):len(args)], "--node-name", "n1"), env)
}

func TestBGPConfig(t *testing.T) {
	a := netip.MustParseAddr
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte("from-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		err  string // substring; "" means valid
		want func(*testing.T, bgpconfig.Config)
	}{
		{name: "kube-vip DaemonSet env", env: map[string]string{
			"bgp_enable": "true", "bgp_routerid": "10.0.0.11", "bgp_as": "64513",
			"bgp_peers": "10.0.0.1:64512::false,[fd00::1]:64512:pw:true", "bgp_hold_time": "9", "bgp_keepalive_interval": "3",
		}, want: func(t *testing.T, c bgpconfig.Config) {
			if c.AS != 64513 || c.RouterID != a("10.0.0.11") || len(c.Peers) != 2 || c.HoldTime != 9*time.Second || c.KeepaliveInterval != 3*time.Second {
				t.Fatalf("%+v", c)
			}
			if p := c.Peers[1]; p.Address != a("fd00::1") || p.Password != "pw" || p.MultihopTTL != 255 {
				t.Fatalf("peer %+v", p)
			}
		}},
		{name: "single peer env with password and multihop", env: map[string]string{
			"bgp_enable": "true", "bgp_routerid": "10.0.0.11", "bgp_peeraddress": "10.0.0.1", "bgp_peeras": "65001",
			"bgp_peerpass": "x", "bgp_multihop": "true", "bgp_sourceip": "10.0.0.11",
		}, want: func(t *testing.T, c bgpconfig.Config) {
			p := c.Peers[0]
			if p.AS != 65001 || p.Password != "x" || p.MultihopTTL != 255 || c.SourceIP != a("10.0.0.11") || c.AS != 65000 {
				t.Fatalf("%+v", c)
			}
		}},
		{name: "seed flags", args: []string{"--bgp", "--bgpRouterID", "10.0.0.11", "--localAS", "1", "--peerAS", "2",
			"--peerAddress", "10.0.0.1", "--peerPass", "p", "--multihop", "--bgppeers", "10.0.0.2:3"},
			want: func(t *testing.T, c bgpconfig.Config) {
				if c.AS != 1 || len(c.Peers) != 2 || c.Peers[0].AS != 2 || c.Peers[1].AS != 3 {
					t.Fatalf("%+v", c)
				}
			}},
		{name: "flag wins over env", args: []string{"--bgp", "--localAS", "7", "--bgpRouterID", "10.0.0.11", "--bgppeers", "10.0.0.1:1"},
			env: map[string]string{"bgp_as": "9"}, want: func(t *testing.T, c bgpconfig.Config) {
				if c.AS != 7 {
					t.Fatalf("AS %d", c.AS)
				}
			}},
		{name: "router ID from the source address", args: []string{"--bgp", "--sourceIP", "10.0.0.11", "--bgppeers", "10.0.0.1:1"},
			want: func(t *testing.T, c bgpconfig.Config) {
				if c.RouterID != a("10.0.0.11") {
					t.Fatalf("router ID %v", c.RouterID)
				}
			}},
		{name: "router ID from an interface", args: []string{"--bgp", "--bgpRouterInterface", "lo", "--bgppeers", "10.0.0.1:1"},
			want: func(t *testing.T, c bgpconfig.Config) {
				if c.RouterID != a("127.0.0.1") {
					t.Fatalf("router ID %v", c.RouterID)
				}
			}},
		{name: "password file", args: []string{"--bgp", "--bgpRouterID", "10.0.0.11", "--bgppeers", "10.0.0.1:1", "--bgp-password-file", pwFile},
			want: func(t *testing.T, c bgpconfig.Config) {
				if c.Peers[0].Password != "from-secret" {
					t.Fatalf("password %q", c.Peers[0].Password)
				}
			}},
		{name: "communities and options", args: []string{"--bgp", "--bgpRouterID", "10.0.0.11", "--bgppeers", "10.0.0.1:1",
			"--bgp-communities", "64512:1,no-export", "--bgp-large-communities", "1:2:3", "--bgp-local-pref", "200",
			"--bgp-graceful-restart", "--bgp-nexthop6", "fd00::11", "--bgp-listen-port", "179"},
			want: func(t *testing.T, c bgpconfig.Config) {
				if len(c.Communities) != 2 || len(c.LargeCommunities) != 1 || c.LocalPref != 200 || !c.GracefulRestart ||
					c.NextHop6 != a("fd00::11") || c.ListenPort != 179 {
					t.Fatalf("%+v", c)
				}
			}},
		{name: "annotations may supply the rest", args: []string{"--bgp", "--annotations", "kube-vip.io"}},
		{name: "peer node selectors", args: []string{"--bgp", "--bgpRouterID", "10.0.0.11", "--bgppeers", "10.0.0.1:1,10.0.0.2:1", "--bgp-peer-node-selector", "10.0.0.1=rack=a"},
			env: map[string]string{"bgp_peer_node_selectors": "10.0.0.9=x"},
			want: func(t *testing.T, c bgpconfig.Config) { // the test's node is in rack b
				if len(c.Peers) != 1 || c.Peers[0].Address != a("10.0.0.2") || len(c.Deselected) != 1 || c.Deselected[0] != a("10.0.0.1") {
					t.Fatalf("peers %v, deselected %v", c.Peers, c.Deselected)
				}
			}},

		{name: "both modes", args: []string{"--bgp", "--arp"}, err: "choose one"},
		{name: "router ID twice", env: map[string]string{"bgp_enable": "true", "bgp_routerid": "10.0.0.1", "bgp_routerinterface": "lo", "bgp_peers": "10.0.0.2:1"}, err: "bgp_routerinterface"},
		{name: "no router ID", env: map[string]string{"bgp_enable": "true", "bgp_peers": "10.0.0.2:1"}, err: "router ID"},
		{name: "no peers", env: map[string]string{"bgp_enable": "true", "bgp_routerid": "10.0.0.1"}, err: "no peers"},
		{name: "password without peer", env: map[string]string{"bgp_enable": "true", "bgp_routerid": "10.0.0.1", "bgp_peers": "10.0.0.2:1", "bgp_peerpass": "x"}, err: "bgp_peerpass"},
		{name: "multihop without peer", env: map[string]string{"bgp_enable": "true", "bgp_routerid": "10.0.0.1", "bgp_peers": "10.0.0.2:1", "bgp_multihop": "true"}, err: "bgp_multihop"},
		{name: "IPv6 peer without brackets", env: map[string]string{"bgp_enable": "true", "bgp_routerid": "10.0.0.1", "bgp_peers": "fd00::1:1"}, err: "brackets"},
		{name: "keepalive not below hold", env: map[string]string{"bgp_enable": "true", "bgp_routerid": "10.0.0.1", "bgp_peers": "10.0.0.2:1", "bgp_hold_time": "9", "bgp_keepalive_interval": "9"}, err: "keepalive"},
		{name: "duplicate peer", env: map[string]string{"bgp_enable": "true", "bgp_routerid": "10.0.0.1", "bgp_peers": "10.0.0.2:1", "bgp_peeraddress": "10.0.0.2"}, err: "twice"},
		{name: "inline and file password", args: []string{"--bgp", "--bgpRouterID", "10.0.0.11", "--bgppeers", "10.0.0.1:1:x", "--bgp-password-file", pwFile}, err: "keep one"},
		{name: "bad community", args: []string{"--bgp", "--bgpRouterID", "10.0.0.11", "--bgppeers", "10.0.0.1:1", "--bgp-communities", "1:2:3"}, err: "--bgp-communities"},
		{name: "bad AS env", env: map[string]string{"bgp_enable": "true", "bgp_as": "x"}, err: "bgp_as"},
		{name: "bad peer node selector", args: []string{"--bgp", "--bgpRouterID", "10.0.0.11", "--bgppeers", "10.0.0.1:1", "--bgp-peer-node-selector", "10.0.0.1=rack in a"}, err: "--bgp-peer-node-selector"},
		{name: "peer node selector twice", env: map[string]string{"bgp_enable": "true", "bgp_routerid": "10.0.0.1", "bgp_peers": "10.0.0.2:1", "bgp_peer_node_selectors": "10.0.0.2=a;10.0.0.2=b"}, err: "two node selectors"},
		{name: "missing password file", args: []string{"--bgp", "--bgpRouterID", "10.0.0.11", "--bgppeers", "10.0.0.1:1", "--bgp-password-file", "/nonexistent"}, err: "--bgp-password-file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseBGP(t, tt.args, tt.env)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v; want one containing %q", err, tt.err)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("error spans several lines: %q", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.want != nil {
				base, pw, err := c.Peering.Static()
				if err != nil {
					t.Fatal(err)
				}
				sel, err := c.Peering.Selectors()
				if err != nil {
					t.Fatal(err)
				}
				cfg, err := bgpconfig.Resolve(base, pw, nil, sel, map[string]string{"rack": "b"})
				if err != nil {
					t.Fatal(err)
				}
				tt.want(t, cfg)
			}
		})
	}
}

func TestCheckBGPEnv(t *testing.T) {
	ok := map[string]string{"PATH": "/bin", "bgp_enable": "true", "bgp_peers": "10.0.0.1:1", "bgp_hold_time": "9", "vip_arp": "false"}
	if err := CheckBGPEnv(MapEnv(ok)); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"bgp_mpbgp_nexthop": "bgp_mpbgp_nexthop is not a BGP setting", // kube-vip's name is mpbgp_nexthop
		"bgp_peer_as":       "bgp_peer_as is not a BGP setting",
	} {
		env := maps.Clone(ok)
		env[name] = "1"
		if err := CheckBGPEnv(MapEnv(env)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v; want %q", name, err, want)
		}
	}
}

// TestBGPEnvFromConfigLookup: the unknown-name check reads the environment
// the configuration is read from (a manifest container's in the generator
// check), not the process's own.
func TestBGPEnvFromConfigLookup(t *testing.T) {
	t.Setenv("bgp_peer_as", "1") // in the process only: must not matter
	base := map[string]string{"bgp_enable": "true", "bgp_as": "65001", "bgp_routerid": "10.0.0.9", "bgp_peers": "10.0.0.1:65000::false"}
	if _, err := parseBGP(t, nil, base); err != nil {
		t.Fatalf("process environment leaked into the check: %v", err)
	}
	bad := maps.Clone(base)
	bad["bgp_peer_as"] = "1"
	if _, err := parseBGP(t, nil, bad); err == nil || !strings.Contains(err.Error(), "bgp_peer_as is not a BGP setting") {
		t.Fatalf("err = %v; want the unknown bgp_peer_as refused from the given environment", err)
	}
	// Only in BGP mode, as before: an ARP agent ignores bgp_ names.
	arp := map[string]string{"vip_arp": "true", "bgp_peer_as": "1"}
	if _, err := parseBGP(t, nil, arp); err != nil {
		t.Fatalf("ARP mode: %v", err)
	}
	// --bgp on the command line turns the check on as bgp_enable does.
	flagged := maps.Clone(bad)
	delete(flagged, "bgp_enable")
	if _, err := parseBGP(t, []string{"--bgp"}, flagged); err == nil || !strings.Contains(err.Error(), "bgp_peer_as") {
		t.Fatalf("--bgp: err = %v; want bgp_peer_as refused", err)
	}
}

// TestPlainPasswordSources: passwords given in the Pod spec are named by
// source, never by value; passwords from the password file are not.
func TestPlainPasswordSources(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"peer list", map[string]string{"bgp_peers": "10.0.0.1:1:Tops3cret"}, []string{"--bgppeers (bgp_peers)"}},
		{"single peer", map[string]string{"bgp_peeraddress": "10.0.0.1", "bgp_peeras": "1", "bgp_peerpass": "Tops3cret"}, []string{"--peerPass (bgp_peerpass)"}},
		{"no password", map[string]string{"bgp_peers": "10.0.0.1:1::false"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"bgp_enable": "true", "bgp_routerid": "10.0.0.11"}
			maps.Copy(env, tt.env)
			c, err := parseBGP(t, nil, env)
			if err != nil {
				t.Fatal(err)
			}
			base, _, err := c.Peering.Static()
			if err != nil {
				t.Fatal(err)
			}
			got := c.Peering.PlainPasswordSources(base.Peers)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("sources %q, want %q", got, tt.want)
			}
		})
	}
}
