package main

import (
	"bytes"
	"errors"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/vip-lb/vip/internal/version"
	"github.com/vip-lb/vip/pkg/agentconfig"
)

// TestRun covers what main does before the agent starts: the version, the
// manifest sub-command, kube-vip's sub-command words, and configuration
// errors (exit status 2) before anything runs.
func TestRun(t *testing.T) {
	env := agentconfig.MapEnv(map[string]string{})
	for _, tc := range []struct {
		args      string
		env       map[string]string
		out, err  string
		configErr bool
	}{
		{args: "--version", out: "vip-agent " + version.Version},
		{args: "manager --version", out: "vip-agent " + version.Version},
		{args: "manifest rbac", out: "kind: ServiceAccount"},
		{args: "manager", err: "no advertisement mode", configErr: true},
		{args: "--arp extra", err: "unexpected arguments", configErr: true},
		{args: "--nope", err: "unknown flag", configErr: true},
		{args: "manager", env: map[string]string{"vip_arp": "true", "bgp_enable": "true"}, err: "choose one", configErr: true},
		{args: "service", env: map[string]string{"vip_arp": "true", "vip_wireguard": "true"}, err: "vip_wireguard", configErr: true},
	} {
		t.Run(tc.args, func(t *testing.T) {
			e := env
			if tc.env != nil {
				tc.env["vip_nodename"] = "n1"
				e = agentconfig.MapEnv(tc.env)
			}
			var out bytes.Buffer
			err := run(strings.Fields(tc.args), e, &out)
			if tc.err == "" {
				if err != nil || !strings.Contains(out.String(), tc.out) {
					t.Fatalf("err %v, output %q; want %q", err, out.String(), tc.out)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) || errors.Is(err, agentconfig.ErrConfig) != tc.configErr {
				t.Fatalf("err %v; want one containing %q (configuration error: %v)", err, tc.err, tc.configErr)
			}
		})
	}
}

func TestGCPercent(t *testing.T) {
	old := debug.SetGCPercent(100)
	defer debug.SetGCPercent(old)
	if gcPercent(func(k string) (string, bool) { return "200", k == "GOGC" }) {
		t.Error("GOGC set in the environment, yet the agent chose its own")
	}
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GC percent %d with GOGC set, want the environment's", got)
	}
	if !gcPercent(func(string) (string, bool) { return "", false }) {
		t.Error("GOGC unset, yet the agent's default was not applied")
	}
	if got := debug.SetGCPercent(100); got != agentGOGC {
		t.Errorf("GC percent %d, want %d", got, agentGOGC)
	}
}
