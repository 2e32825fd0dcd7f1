package agentconfig

import (
	"errors"
	"strings"
	"testing"
)

func TestDDNSSettings(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string // "" = accepted
	}{
		{"kube-vip env", nil, map[string]string{"vip_arp": "true", "cp_enable": "true", "vip_address": "k8s-api.lab",
			"vip_interface": "eth0", "vip_ddns": "true"}, ""},
		{"flags", []string{"--arp", "--controlplane", "--address", "k8s-api.lab", "--interface", "eth0", "--ddns"}, nil, ""},
		{"address is an IP", []string{"--arp", "--controlplane", "--address", "10.0.0.1", "--interface", "eth0", "--ddns"}, nil, "needs a DNS name"},
		{"no interface", []string{"--arp", "--controlplane", "--address", "k8s-api.lab", "--ddns"}, nil, "needs --interface"},
		{"bgp without election", []string{"--bgp", "--controlplane", "--address", "k8s-api.lab", "--interface", "eth0", "--ddns",
			"--leader-election=false", "--bgpRouterID", "10.0.0.1", "--bgppeers", "10.0.0.2:65001::false"}, nil, "leader-election"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseConfig(t, append(tc.args, "--node-name", "n1"), tc.env)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("rejected: %v", err)
			case tc.want == "" && !c.CP.DDNS:
				t.Fatal("ddns not set")
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("err = %v, want %q", err, tc.want)
			case err != nil && !errors.Is(err, ErrConfig):
				t.Fatalf("%v does not wrap ErrConfig", err)
			}
		})
	}
}
