package agentconfig

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestUPnPSettings(t *testing.T) {
	arp := map[string]string{"vip_arp": "true"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{"vip_arp": "true"}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		on, all bool
		lease   time.Duration
		err     string
	}{
		{name: "off by default", env: arp, lease: time.Hour},
		{name: "kube-vip env enableUPNP", env: with("enableUPNP", "true"), on: true, lease: time.Hour},
		{name: "enable_upnp spelling", env: with("enable_upnp", "true"), on: true, lease: time.Hour},
		{name: "env false", env: with("enableUPNP", "false"), lease: time.Hour},
		{name: "flags", args: []string{"--enableUPNP", "--upnp-all-services", "--upnp-lease-duration=10m"}, env: arp, on: true, all: true, lease: 10 * time.Minute},
		{name: "permanent leases", args: []string{"--enableUPNP", "--upnp-lease-duration=0"}, env: arp, on: true},
		{name: "flag wins over env", args: []string{"--enableUPNP=false"}, env: with("enableUPNP", "true"), lease: time.Hour},
		{name: "BGP mode refused", env: map[string]string{"bgp_enable": "true", "bgp_routerid": "10.0.0.1", "bgp_as": "65000",
			"bgp_peers": "10.0.0.2:65001::false", "enableUPNP": "true"}, err: "works with --arp only"},
		{name: "services off refused", args: []string{"--controlplane", "--address=10.0.0.5", "--services=false"}, env: with("enableUPNP", "true"), err: "forwards Service ports"},
		{name: "negative lease refused", args: []string{"--enableUPNP", "--upnp-lease-duration=-1m"}, env: arp, err: "negative"},
		{name: "bad env value", env: with("enableUPNP", "yes please"), err: "enableUPNP"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseBGP(t, tt.args, tt.env)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !errors.Is(err, ErrConfig) {
					t.Fatalf("error %v, want ErrConfig containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.UPnP.Enabled != tt.on || c.UPnP.AllServices != tt.all || c.UPnP.Lease != tt.lease {
				t.Errorf("got enabled=%v all=%v lease=%v, want %v %v %v", c.UPnP.Enabled, c.UPnP.AllServices, c.UPnP.Lease, tt.on, tt.all, tt.lease)
			}
		})
	}
}
