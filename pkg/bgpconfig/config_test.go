package bgpconfig

import (
	"encoding/base64"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func validConfig() Config {
	return Config{
		AS: 64513, RouterID: netip.MustParseAddr("10.77.0.11"),
		Peers: []Peer{{Address: netip.MustParseAddr("10.77.0.1"), AS: 64512}},
	}.Normalize()
}

func TestNormalize(t *testing.T) {
	c := Config{HoldTime: 9 * time.Second, Peers: []Peer{{Address: netip.MustParseAddr("10.0.0.1")}}}.Normalize()
	if c.KeepaliveInterval != 3*time.Second || c.ConnectRetry != DefaultConnectRetry || c.ListenPort != -1 || c.Peers[0].Port != 179 {
		t.Fatalf("Normalize = %+v", c)
	}
	c = Config{GracefulRestart: true}.Normalize()
	if c.HoldTime != DefaultHoldTime || c.KeepaliveInterval != DefaultKeepalive || c.RestartTime != DefaultRestartTime {
		t.Fatalf("Normalize = %+v", c)
	}
}

func TestValidate(t *testing.T) {
	a := netip.MustParseAddr
	tests := []struct {
		name string
		mod  func(*Config)
		err  string
	}{
		{"valid", func(*Config) {}, ""},
		{"valid IPv6 peer and next hop", func(c *Config) {
			c.Peers = append(c.Peers, Peer{Address: a("fd00::1"), AS: 1, Port: 179})
			c.NextHop6 = a("fd00::11")
		}, ""},
		{"no AS", func(c *Config) { c.AS = 0 }, "local AS"},
		{"no router ID", func(c *Config) { c.RouterID = netip.Addr{} }, "router ID is not set"},
		{"IPv6 router ID", func(c *Config) { c.RouterID = a("fd00::1") }, "IPv4"},
		{"no peers", func(c *Config) { c.Peers = nil }, "no peers"},
		{"listen port 0", func(c *Config) { c.ListenPort = 0 }, "listen port"},
		{"hold below 3s", func(c *Config) { c.HoldTime, c.KeepaliveInterval = 2*time.Second, time.Second }, "hold time"},
		{"keepalive not below hold", func(c *Config) { c.HoldTime, c.KeepaliveInterval = 9*time.Second, 9*time.Second }, "keepalive"},
		{"fractional timer", func(c *Config) { c.HoldTime = 9500 * time.Millisecond }, "whole seconds"},
		{"restart time too long", func(c *Config) { c.GracefulRestart, c.RestartTime = true, 5000*time.Second }, "graceful restart"},
		{"duplicate peer", func(c *Config) { c.Peers = append(c.Peers, c.Peers[0]) }, "twice"},
		{"source of the other family", func(c *Config) { c.SourceIP = a("fd00::11") }, ""},
		{"v4 next hop is v6", func(c *Config) { c.NextHop4 = a("fd00::1") }, "IPv4 next hop"},
		{"v6 next hop is v4", func(c *Config) { c.NextHop6 = a("10.0.0.1") }, "IPv6 next hop"},
		{"peer AS 0", func(c *Config) { c.Peers[0].AS = 0 }, "AS must be"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.mod(&c)
			err := c.Validate()
			if tt.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate() = %v; want error containing %q", err, tt.err)
			}
		})
	}
}

func TestFromAnnotations(t *testing.T) {
	a := netip.MustParseAddr
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	tests := []struct {
		name   string
		ann    map[string]string
		want   NodeSettings
		absent bool
		err    error
		errMsg string
	}{
		{name: "none", ann: map[string]string{"other/node-asn": "1"}, absent: true},
		{name: "kube-vip keys", ann: map[string]string{
			"kube-vip.io/node-asn": "65000", "kube-vip.io/src-ip": "10.77.0.11", "kube-vip.io/peer-asn": "64512",
			"kube-vip.io/peer-ip": "10.77.0.1, 10.77.0.2", "kube-vip.io/bgp-pass": b64("pw"),
		}, want: NodeSettings{AS: 65000, SourceIP: a("10.77.0.11"), Peers: []Peer{
			{Address: a("10.77.0.1"), Port: 179, AS: 64512, Password: "pw"},
			{Address: a("10.77.0.2"), Port: 179, AS: 64512, Password: "pw"},
		}}},
		{name: "peer list key", ann: map[string]string{
			"kube-vip.io/node-asn": "65000", "kube-vip.io/src-ip": "fd00::11",
			"kube-vip.io/bgp-peers": "[fd00::1]:64512::true",
		}, want: NodeSettings{AS: 65000, SourceIP: a("fd00::11"), Peers: []Peer{
			{Address: a("fd00::1"), Port: 179, AS: 64512, MultihopTTL: 255},
		}}},
		{name: "Equinix indexed keys", ann: map[string]string{
			"metal.equinix.com/bgp-peers-0-node-asn": "65000", "metal.equinix.com/bgp-peers-0-src-ip": "10.0.0.5",
			"metal.equinix.com/bgp-peers-0-peer-asn": "65530", "metal.equinix.com/bgp-peers-0-peer-ip": "169.254.255.1",
			"metal.equinix.com/bgp-peers-1-node-asn": "65000", "metal.equinix.com/bgp-peers-1-src-ip": "10.0.0.5",
			"metal.equinix.com/bgp-peers-1-peer-asn": "65530", "metal.equinix.com/bgp-peers-1-peer-ip": "169.254.255.2",
			"metal.equinix.com/bgp-peers-1-bgp-pass": b64("x"),
		}, want: NodeSettings{AS: 65000, SourceIP: a("10.0.0.5"), Peers: []Peer{
			{Address: a("169.254.255.1"), Port: 179, AS: 65530},
			{Address: a("169.254.255.2"), Port: 179, AS: 65530, Password: "x"},
		}}},
		{name: "missing src-ip", ann: map[string]string{
			"kube-vip.io/node-asn": "65000", "kube-vip.io/peer-asn": "1", "kube-vip.io/peer-ip": "10.0.0.1",
		}, err: ErrIncomplete, errMsg: "kube-vip.io/src-ip"},
		{name: "peer-ip without peer-asn", ann: map[string]string{
			"kube-vip.io/node-asn": "65000", "kube-vip.io/src-ip": "10.0.0.2", "kube-vip.io/peer-ip": "10.0.0.1",
		}, err: ErrIncomplete, errMsg: "peer-asn"},
		{name: "bad base64", ann: map[string]string{
			"kube-vip.io/node-asn": "65000", "kube-vip.io/src-ip": "10.0.0.2", "kube-vip.io/peer-asn": "1",
			"kube-vip.io/peer-ip": "10.0.0.1", "kube-vip.io/bgp-pass": "%%%",
		}, err: ErrInvalid, errMsg: "bgp-pass"},
		{name: "disagreeing node AS", ann: map[string]string{
			"p/node-asn": "1", "p/bgp-peers-0-node-asn": "2",
		}, err: ErrInvalid, errMsg: "disagrees"},
		{name: "duplicate peer", ann: map[string]string{
			"p/node-asn": "1", "p/src-ip": "10.0.0.2", "p/peer-asn": "1", "p/peer-ip": "10.0.0.1", "p/bgp-peers": "10.0.0.1:1",
		}, err: ErrInvalid, errMsg: "twice"},
		{name: "bad peer list", ann: map[string]string{"p/node-asn": "1", "p/bgp-peers": "fd00::1:1"}, err: ErrInvalid, errMsg: "brackets"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := "kube-vip.io"
			for k := range tt.ann {
				if !tt.absent {
					prefix = k[:strings.IndexByte(k, '/')]
				}
			}
			got, found, err := FromAnnotations(prefix+"/", tt.ann)
			if tt.absent {
				if found || err != nil {
					t.Fatalf("found=%v err=%v; want nothing", found, err)
				}
				return
			}
			if !found {
				t.Fatal("not found")
			}
			if tt.err != nil {
				if !errors.Is(err, tt.err) || !strings.Contains(err.Error(), tt.errMsg) {
					t.Fatalf("err = %v; want %v containing %q", err, tt.err, tt.errMsg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestApplyNodeSettings(t *testing.T) {
	base := validConfig()
	base.Communities = []uint32{1}
	s := NodeSettings{AS: 65000, SourceIP: netip.MustParseAddr("10.0.0.9"), Peers: []Peer{{Address: netip.MustParseAddr("10.0.0.1"), AS: 2, Port: 179}}}
	got := s.Apply(base)
	if got.AS != 65000 || got.RouterID != s.SourceIP || got.SourceIP != s.SourceIP || !reflect.DeepEqual(got.Peers, s.Peers) || len(got.Communities) != 1 {
		t.Fatalf("Apply = %+v", got)
	}
	s.SourceIP = netip.MustParseAddr("fd00::9")
	if got := s.Apply(base); got.RouterID != base.RouterID || got.SourceIP != s.SourceIP {
		t.Fatalf("IPv6 src-ip changed the router ID: %+v", got)
	}
}

func TestPasswords(t *testing.T) {
	a := netip.MustParseAddr
	dir := t.TempDir()
	file := filepath.Join(dir, "one")
	if err := os.WriteFile(file, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pw, err := LoadPasswords(file)
	if err != nil || pw.Default != "s3cret" {
		t.Fatalf("LoadPasswords(file) = %+v, %v", pw, err)
	}
	peers := []Peer{{Address: a("10.0.0.1")}, {Address: a("fd00::1")}}
	got, err := pw.Apply(peers)
	if err != nil || got[0].Password != "s3cret" || got[1].Password != "s3cret" || peers[0].Password != "" {
		t.Fatalf("Apply = %+v, %v", got, err)
	}

	sec := filepath.Join(dir, "secret")
	for name, v := range map[string]string{"password": "dflt", "fd00--1": "six", "..data/x": "ignored"} {
		p := filepath.Join(sec, name)
		_ = os.MkdirAll(filepath.Dir(p), 0o700)
		if err := os.WriteFile(p, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pw, err = LoadPasswords(sec)
	if err != nil {
		t.Fatal(err)
	}
	got, err = pw.Apply(peers)
	if err != nil || got[0].Password != "dflt" || got[1].Password != "six" {
		t.Fatalf("Apply = %+v, %v", got, err)
	}
	if u := pw.Unused(peers[:1]); len(u) != 1 || u[0] != a("fd00::1") {
		t.Fatalf("Unused = %v", u)
	}
	if _, err := pw.Apply([]Peer{{Address: a("fd00::1"), Password: "inline"}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("inline + file password: err = %v", err)
	}
	_ = os.WriteFile(filepath.Join(sec, "router"), []byte("x"), 0o600)
	if _, err := LoadPasswords(sec); err == nil || !strings.Contains(err.Error(), "router") {
		t.Fatalf("bad file name: err = %v", err)
	}
	if _, err := LoadPasswords(filepath.Join(dir, "missing")); !errors.Is(err, ErrInvalid) {
		t.Fatalf("missing file: err = %v", err)
	}
}

func TestCommunities(t *testing.T) {
	got, err := ParseCommunities("65000:100, no-export,0:0")
	if err != nil || !reflect.DeepEqual(got, []uint32{65000<<16 | 100, 0xFFFFFF01, 0}) {
		t.Fatalf("ParseCommunities = %v, %v", got, err)
	}
	for _, bad := range []string{"65536:1", "1", "a:b", "1:2:3"} {
		if _, err := ParseCommunities(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseCommunities(%q) err = %v", bad, err)
		}
	}
	lc, err := ParseLargeCommunities("4200000000:1:2,")
	if err != nil || !reflect.DeepEqual(lc, []LargeCommunity{{Global: 4200000000, Local1: 1, Local2: 2}}) || lc[0].String() != "4200000000:1:2" {
		t.Fatalf("ParseLargeCommunities = %v, %v", lc, err)
	}
	for _, bad := range []string{"1:2", "1:2:3:4", "4294967296:1:1"} {
		if _, err := ParseLargeCommunities(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseLargeCommunities(%q) err = %v", bad, err)
		}
	}
}
