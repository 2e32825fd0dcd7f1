package main

import (
	"slices"
	"testing"

	"github.com/spf13/pflag"
)

// TestKubeVipStartCommand: the static Pod of kube-vip's control-plane docs
// (args [start], vip_address, no cp_enable) runs the control-plane VIP and
// no Services; cp_enable, when given, decides; manager and service change
// nothing.
func TestKubeVipStartCommand(t *testing.T) {
	docsEnv := map[string]string{"vip_arp": "true", "vip_interface": "ens160", "vip_leaderelection": "true",
		"vip_leaseduration": "5", "vip_renewdeadline": "3", "vip_retryperiod": "1", "vip_address": "192.168.0.75"}
	with := func(k, v string) map[string]string {
		m := map[string]string{k: v}
		for kk, vv := range docsEnv {
			m[kk] = vv
		}
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
			args, start := kubeVipCommand(tc.args)
			if slices.Contains(args, "start") || slices.Contains(args, "manager") || slices.Contains(args, "service") {
				t.Fatalf("sub-command left in %v", args)
			}
			c := defaultConfig()
			fs := pflag.NewFlagSet("vip-agent", pflag.ContinueOnError)
			c.flags(fs)
			if err := fs.Parse(args); err != nil {
				t.Fatal(err)
			}
			if err := applyEnv(fs, mapEnv(tc.env)); err != nil {
				t.Fatal(err)
			}
			if _, err := applyStart(fs, start); err != nil {
				t.Fatal(err)
			}
			c.nodeName = "cp1"
			if err := c.validate(); err != nil {
				t.Fatal(err)
			}
			if c.controlPlane != tc.cp || c.services != tc.services {
				t.Errorf("controlPlane=%v services=%v; want %v %v", c.controlPlane, c.services, tc.cp, tc.services)
			}
		})
	}
}
