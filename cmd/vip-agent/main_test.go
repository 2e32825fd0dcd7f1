package main

import (
	"bytes"
	"errors"
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
