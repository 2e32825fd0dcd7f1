package ipam

import "testing"

func TestConfigDHCP(t *testing.T) {
	c, errs := ParseConfig(map[string]string{
		"cidr-home":   "0.0.0.0/32",
		"cidr-mixed":  "0.0.0.0/32,10.0.0.0/30",
		"cidr-v6only": "fd00::/120",
		"cidr-global": "10.1.0.0/24",
		"cidr-lab":    "10.2.0.0/24",
	})
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	for ns, want := range map[string]bool{
		"home": true, "mixed": true, "global": false, "lab": false, "other": false,
		"v6only": false, // its IPv4 comes from the global pool
	} {
		if got := c.DHCP(ns); got != want {
			t.Errorf("DHCP(%q) = %v, want %v", ns, got, want)
		}
	}
	g, _ := ParseConfig(map[string]string{"cidr-global": "0.0.0.0/32", "cidr-lab": "10.2.0.0/24"})
	if !g.DHCP("other") || g.DHCP("lab") {
		t.Errorf("global marker: other %v (want true), lab %v (want false)", g.DHCP("other"), g.DHCP("lab"))
	}
	var nilCfg *Config
	if nilCfg.DHCP("x") {
		t.Error("nil config wants DHCP")
	}
}
