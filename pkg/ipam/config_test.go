package ipam

import (
	"errors"
	"maps"
	"math"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// describePools renders every pool as "name: range,range" lines, families
// IPv4 then IPv6, for compact expectations.
func describePools(c *Config) []string {
	var out []string
	for _, name := range slices.Sorted(maps.Keys(c.pools)) {
		p := c.pools[name]
		var parts []string
		if p.dhcp {
			parts = append(parts, "dhcp")
		}
		for _, rr := range p.rr {
			for _, r := range rr {
				if r.From() == r.To() {
					parts = append(parts, r.From().String())
				} else {
					parts = append(parts, r.String())
				}
			}
		}
		out = append(out, name+": "+strings.Join(parts, ","))
	}
	return out
}

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name  string
		data  map[string]string
		pools []string // describePools output
		errs  []string // "key entry" of each expected error, in order
		check func(t *testing.T, c *Config)
	}{
		{
			name: "empty",
			check: func(t *testing.T, c *Config) {
				if c.Descending() || c.SkipEndIPsInCIDR() || !c.AllowStaticOutsidePools() || c.Shareable("x") || c.Interface("x") != "" {
					t.Error("defaults: want asc, no skip, static outside pools allowed, no sharing, no interface")
				}
			},
		},
		{
			name:  "cidr is masked to its real prefix like the seed",
			data:  map[string]string{"cidr-global": "192.168.0.220/29"},
			pools: []string{"cidr-global: 192.168.0.216-192.168.0.223"},
		},
		{
			name:  "comma list with whitespace, adjacent CIDRs merge",
			data:  map[string]string{"cidr-global": " 192.168.0.220/29 ,\t192.168.0.230/29\n"},
			pools: []string{"cidr-global: 192.168.0.216-192.168.0.231"},
		},
		{
			name:  "range",
			data:  map[string]string{"range-global": "192.168.0.210-192.168.0.219"},
			pools: []string{"range-global: 192.168.0.210-192.168.0.219"},
		},
		{
			name:  "range with spaces around the dash",
			data:  map[string]string{"range-dev": "10.0.0.1 - 10.0.0.3"},
			pools: []string{"range-dev: 10.0.0.1-10.0.0.3"},
		},
		{
			name:  "overlapping ranges in one key merge",
			data:  map[string]string{"range-global": "192.168.0.10-192.168.0.11,192.168.0.10-192.168.0.13"},
			pools: []string{"range-global: 192.168.0.10-192.168.0.13"},
		},
		{
			name:  "IPv6 cidr and range",
			data:  map[string]string{"cidr-v6": "2001::10/127", "range-v6": "2001::10-2001::14,2001::20-2001::24"},
			pools: []string{"cidr-v6: 2001::10-2001::11", "range-v6: 2001::10-2001::14,2001::20-2001::24"},
		},
		{
			name:  "mixed families in one key",
			data:  map[string]string{"cidr-global": "192.168.0.200/30,2001::10/127"},
			pools: []string{"cidr-global: 192.168.0.200-192.168.0.203,2001::10-2001::11"},
		},
		{
			name:  "bad CIDR does not stop its neighbours",
			data:  map[string]string{"cidr-global": "10.0.0.0/24,10.0.0.300/24,10.0.2.0/30", "range-dev": "10.1.0.1-10.1.0.2"},
			pools: []string{"cidr-global: 10.0.0.0-10.0.0.255,10.0.2.0-10.0.2.3", "range-dev: 10.1.0.1-10.1.0.2"},
			errs:  []string{"cidr-global 10.0.0.300/24"},
		},
		{
			name:  "a /0 is refused",
			data:  map[string]string{"cidr-global": "0.0.0.0/0,10.0.0.0/30", "range-global": "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
			pools: []string{"cidr-global: 10.0.0.0-10.0.0.3", "range-global: "},
			errs:  []string{"cidr-global 0.0.0.0/0", "range-global ::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
		},
		{
			name:  "reversed range",
			data:  map[string]string{"range-global": "10.0.0.9-10.0.0.1,10.0.0.20-10.0.0.21"},
			pools: []string{"range-global: 10.0.0.20-10.0.0.21"},
			errs:  []string{"range-global 10.0.0.9-10.0.0.1"},
		},
		{
			name:  "mixed-family range",
			data:  map[string]string{"range-global": "10.0.0.1-2001::1"},
			pools: []string{"range-global: "},
			errs:  []string{"range-global 10.0.0.1-2001::1"},
		},
		{
			name: "garbage, zones and mapped addresses",
			data: map[string]string{"range-global": "a-b,fe80::1%eth0-fe80::2,::ffff:10.0.0.1-::ffff:10.0.0.2,1-2-3",
				"cidr-global": "::ffff:10.0.0.0/120,10.0.0.0/33,banana"},
			pools: []string{"cidr-global: ", "range-global: "},
			errs: []string{"cidr-global ::ffff:10.0.0.0/120", "cidr-global 10.0.0.0/33", "cidr-global banana",
				"range-global a-b", "range-global fe80::1%eth0-fe80::2", "range-global ::ffff:10.0.0.1-::ffff:10.0.0.2",
				"range-global 1-2-3"},
		},
		{
			name:  "huge ranges stay ranges",
			data:  map[string]string{"cidr-global": "0.0.0.0/1,::/1", "cidr-dev": "2001:db8::/64"},
			pools: []string{"cidr-dev: 2001:db8::-2001:db8::ffff:ffff:ffff:ffff", "cidr-global: 0.0.0.0-127.255.255.255,::-7fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
			check: func(t *testing.T, c *Config) {
				want := []PoolInfo{
					{Name: "cidr-dev", Family: IPv6, Size: math.Exp2(64)},
					{Name: "cidr-global", Family: IPv4, Size: math.Exp2(31)},
					{Name: "cidr-global", Family: IPv6, Size: math.Exp2(127)},
				}
				if got := c.Pools(); !slices.Equal(got, want) {
					t.Errorf("Pools() = %v, want %v", got, want)
				}
			},
		},
		{
			name: "skip-end-ips-in-cidr per real prefix; /31, /32, IPv6 and ranges untouched",
			data: map[string]string{
				"skip-end-ips-in-cidr": "true",
				"cidr-a":               "10.0.0.0/24",
				"cidr-b":               "10.0.1.0/30",
				"cidr-c":               "10.0.2.0/31",
				"cidr-d":               "10.0.3.7/32",
				"cidr-e":               "fd00::/126",
				"range-f":              "10.0.4.0-10.0.4.255",
				"cidr-g":               "10.0.5.128/25,10.0.5.0/25",
			},
			pools: []string{
				"cidr-a: 10.0.0.1-10.0.0.254",
				"cidr-b: 10.0.1.1-10.0.1.2",
				"cidr-c: 10.0.2.0-10.0.2.1",
				"cidr-d: 10.0.3.7",
				"cidr-e: fd00::-fd00::3",
				"cidr-g: 10.0.5.1-10.0.5.126,10.0.5.129-10.0.5.254",
				"range-f: 10.0.4.0-10.0.4.255",
			},
			check: func(t *testing.T, c *Config) {
				if !c.SkipEndIPsInCIDR() {
					t.Error("SkipEndIPsInCIDR() = false")
				}
			},
		},
		{
			name:  "skip-end-ips-in-cidr on overlapping CIDRs is a union of trimmed CIDRs",
			data:  map[string]string{"skip-end-ips-in-cidr": "TRUE", "cidr-global": "192.168.0.200/30,192.168.0.200/29"},
			pools: []string{"cidr-global: 192.168.0.201-192.168.0.206"},
		},
		{
			name:  "bad skip-end-ips-in-cidr keeps the default",
			data:  map[string]string{"skip-end-ips-in-cidr": "yes", "cidr-global": "10.0.0.0/30"},
			pools: []string{"cidr-global: 10.0.0.0-10.0.0.3"},
			errs:  []string{"skip-end-ips-in-cidr yes"},
		},
		{
			name: "search-order desc",
			data: map[string]string{"search-order": " DESC "},
			check: func(t *testing.T, c *Config) {
				if !c.Descending() {
					t.Error("Descending() = false")
				}
			},
		},
		{
			name: "search-order bogus falls back to asc",
			data: map[string]string{"search-order": "random"},
			errs: []string{"search-order random"},
			check: func(t *testing.T, c *Config) {
				if c.Descending() {
					t.Error("Descending() = true")
				}
			},
		},
		{
			name: "allow-share per namespace with global fallback",
			data: map[string]string{"allow-share-dev": "true", "allow-share-prod": "false", "allow-share-global": "true", "allow-share-qa": "maybe"},
			errs: []string{"allow-share-qa maybe"},
			check: func(t *testing.T, c *Config) {
				for ns, want := range map[string]bool{"dev": true, "prod": false, "other": true, "qa": true} {
					if got := c.Shareable(ns); got != want {
						t.Errorf("Shareable(%q) = %v, want %v", ns, got, want)
					}
				}
			},
		},
		{
			name: "interfaces with global fallback",
			data: map[string]string{"interface-dev": " eth3 ", "interface-global": "eth0", "interface-bad": "a/b", "interface-long": "abcdefghijklmnop"},
			errs: []string{"interface-bad a/b", "interface-long abcdefghijklmnop"},
			check: func(t *testing.T, c *Config) {
				if c.Interface("dev") != "eth3" || c.Interface("x") != "eth0" || c.Interface("bad") != "eth0" {
					t.Errorf("Interface: dev=%q x=%q bad=%q", c.Interface("dev"), c.Interface("x"), c.Interface("bad"))
				}
			},
		},
		{
			name: "allow-static-outside-pools false",
			data: map[string]string{"allow-static-outside-pools": "false"},
			check: func(t *testing.T, c *Config) {
				if c.AllowStaticOutsidePools() {
					t.Error("AllowStaticOutsidePools() = true")
				}
			},
		},
		{
			name: "unknown keys are ignored",
			data: map[string]string{"kubevip-services": "{}", "foo": "bar", "cidrglobal": "x"},
		},
		{
			name: "prefix without scope",
			data: map[string]string{"cidr-": "10.0.0.0/24"},
			errs: []string{"cidr- 10.0.0.0/24"},
		},
		{
			name:  "lone addresses, CIDRs in range keys, empty entries",
			data:  map[string]string{"range-global": "10.0.0.5,,10.0.1.0/31, ,", "cidr-dev": "10.0.2.1-10.0.2.2"},
			pools: []string{"cidr-dev: 10.0.2.1-10.0.2.2", "range-global: 10.0.0.5,10.0.1.0-10.0.1.1"},
		},
		{
			name:  "DHCP marker",
			data:  map[string]string{"cidr-dev": "0.0.0.0/32"},
			pools: []string{"cidr-dev: dhcp"},
			check: func(t *testing.T, c *Config) {
				want := []PoolInfo{{Name: "cidr-dev", Family: IPv4, DHCP: true}}
				if got := c.Pools(); !slices.Equal(got, want) {
					t.Errorf("Pools() = %v, want %v", got, want)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, errs := ParseConfig(tt.data)
			if got := describePools(c); !slices.Equal(got, tt.pools) {
				t.Errorf("pools:\n got %q\nwant %q", got, tt.pools)
			}
			var got []string
			for _, err := range errs {
				var ee *EntryError
				if !errors.Is(err, ErrBadEntry) || !errors.As(err, &ee) {
					t.Errorf("error %v: want an *EntryError wrapping ErrBadEntry", err)
					continue
				}
				if !strings.Contains(err.Error(), ee.Key) {
					t.Errorf("error %q does not name its key", err)
				}
				got = append(got, ee.Key+" "+ee.Entry)
			}
			if !slices.Equal(got, tt.errs) {
				t.Errorf("errors:\n got %q\nwant %q", got, tt.errs)
			}
			if tt.check != nil {
				tt.check(t, c)
			}
		})
	}
}

func TestPoolOfSearchOrder(t *testing.T) {
	c, _ := ParseConfig(map[string]string{
		"cidr-dev":     "10.0.0.0/24",
		"range-dev":    "10.0.0.5-10.0.0.6,10.0.1.1-10.0.1.1",
		"cidr-global":  "10.0.0.0/16",
		"range-global": "10.1.0.0-10.1.0.1",
	})
	for _, tc := range []struct {
		ns, addr, want string
	}{
		{"dev", "10.0.0.5", "cidr-dev"},
		{"dev", "10.0.1.1", "range-dev"},
		{"dev", "10.0.2.1", ""}, // dev has pools of its own: global ones do not serve it
		{"prod", "10.0.0.5", "cidr-global"},
		{"prod", "10.1.0.1", "range-global"},
		{"prod", "10.2.0.1", ""},
	} {
		got, ok := c.PoolOf(tc.ns, netip.MustParseAddr(tc.addr))
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("PoolOf(%s, %s) = %q, %v; want %q", tc.ns, tc.addr, got, ok, tc.want)
		}
	}
}

func TestWholeFamilyRefused(t *testing.T) {
	for _, entry := range []string{"0.0.0.0/0", "::/0", "0.0.0.0-255.255.255.255", "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "10.0.0.0/0"} {
		for _, key := range []string{"cidr-global", "range-global"} {
			for _, skip := range []string{"false", "true"} {
				data := map[string]string{key: entry, "skip-end-ips-in-cidr": skip}
				c, errs := ParseConfig(data)
				if len(errs) == 0 || !strings.Contains(errs[0].Error(), "every address") {
					t.Errorf("%s=%s (skip-end %q): errors %v, want the /0 refused", key, entry, skip, errs)
				}
				if len(c.Pools()) != 0 {
					t.Errorf("%s=%s: pools %v, want none", key, entry, c.Pools())
				}
			}
		}
	}
	// Large but real prefixes stay accepted.
	for _, entry := range []string{"0.0.0.0/1", "fd00::/8", "::/1"} {
		if _, errs := ParseConfig(map[string]string{"cidr-global": entry}); len(errs) != 0 {
			t.Errorf("%s refused: %v", entry, errs)
		}
	}
}

func TestTenantSettings(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		data                  map[string]string
		ns                    string
		legacy, outside, dhcp bool
		fallThru, skipDot0255 bool
	}{
		{"legacy ConfigMap", map[string]string{"cidr-global": "10.0.0.0/24"}, "a", true, true, true, false, true},
		{"new install", map[string]string{"allow-static-outside-pools": "false"}, "a", false, false, false, false, true},
		{"explicit true is not legacy", map[string]string{"allow-static-outside-pools": "true"}, "a", false, true, false, false, true},
		{"trusted namespace", map[string]string{"allow-static-outside-pools": "false", "allow-static-outside-pools-a": "true"}, "a", false, true, false, false, true},
		{"untrusting one namespace of a legacy ConfigMap", map[string]string{"allow-static-outside-pools-a": "false"}, "a", true, false, true, false, true},
		{"DHCP by admin key", map[string]string{"allow-static-outside-pools": "false", "allow-dhcp-a": "true"}, "a", false, false, true, false, true},
		{"DHCP global key, namespace overrides", map[string]string{"allow-dhcp-global": "true", "allow-dhcp-a": "false"}, "a", true, true, false, false, true},
		{"DHCP by a marker pool", map[string]string{"allow-static-outside-pools": "false", "cidr-a": "0.0.0.0/32"}, "a", false, false, true, false, true},
		{"fallthrough and dot0", map[string]string{"fallthrough-global": "true", "skip-dot0-dot255": "false"}, "a", true, true, true, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, errs := ParseConfig(tc.data)
			if len(errs) > 0 {
				t.Fatal(errs)
			}
			if c.Legacy() != tc.legacy || c.AllowStaticOutside(tc.ns) != tc.outside || c.DHCPAllowed(tc.ns) != tc.dhcp ||
				c.Fallthrough(tc.ns) != tc.fallThru || c.SkipDot0Dot255() != tc.skipDot0255 {
				t.Errorf("Legacy %v AllowStaticOutside %v DHCPAllowed %v Fallthrough %v SkipDot0Dot255 %v",
					c.Legacy(), c.AllowStaticOutside(tc.ns), c.DHCPAllowed(tc.ns), c.Fallthrough(tc.ns), c.SkipDot0Dot255())
			}
		})
	}
	if _, errs := ParseConfig(map[string]string{"allow-dhcp-a": "yes please"}); len(errs) != 1 {
		t.Errorf("bad bool: errors %v", errs)
	}
}
