package agentconfig

import (
	"maps"
	"slices"
	"testing"
)

// TestKubeVipStartCommand: the static Pod of kube-vip's control-plane docs
// (args [start], vip_address, no cp_enable) runs the control-plane VIP and
// no Services; cp_enable, when given, decides; manager and service change
// nothing.
func TestKubeVipStartCommand(t *testing.T) {
	docsEnv := map[string]string{"vip_arp": "true", "vip_interface": "ens160", "vip_leaderelection": "true",
		"vip_leaseduration": "5", "vip_renewdeadline": "3", "vip_retryperiod": "1", "vip_address": "192.168.0.75"}
	with := func(k, v string) map[string]string {
		m := maps.Clone(docsEnv)
		m[k] = v
		return m
	}
	for _, tc := range []struct {
		name         string
		args         []string
		env          map[string]string
		cp, services bool
	}{
		{"docs static Pod", []string{"start"}, docsEnv, true, false},
		{"start with cp_enable=false", []string{"start"}, with("cp_enable", "false"), false, true},
		{"start with --controlplane=false", []string{"start", "--controlplane=false"}, docsEnv, false, true},
		{"start with svc_enable", []string{"start"}, with("svc_enable", "true"), true, true},
		{"manager", []string{"manager"}, docsEnv, false, true},
		{"service", []string{"service"}, docsEnv, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args, start := KubeVipCommand(tc.args)
			if slices.Contains(args, "start") || slices.Contains(args, "manager") || slices.Contains(args, "service") {
				t.Fatalf("sub-command left in %v", args)
			}
			c, fs, err := Parse(args, MapEnv(tc.env), nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ApplyStart(fs, start); err != nil {
				t.Fatal(err)
			}
			c.NodeName = "cp1"
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			if c.ControlPlane != tc.cp || c.Services != tc.services {
				t.Errorf("controlPlane=%v services=%v; want %v %v", c.ControlPlane, c.Services, tc.cp, tc.services)
			}
		})
	}
}
