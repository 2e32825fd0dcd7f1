package agentconfig

import (
	"errors"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/vip-lb/vip/pkg/compat"
)

// TestKubeVipEnvRefusals: every kube-vip setting vip does not provide
// stops the agent in one line naming it, unless set to its harmless value.
func TestKubeVipEnvRefusals(t *testing.T) {
	base := map[string]string{"vip_arp": "true", "vip_nodename": "n1"}
	for _, tc := range []struct {
		name, value, want string
	}{
		{"mpbgp_nexthop", "fixed", "--bgp-nexthop"},
		{"mpbgp_ipv4", "10.0.0.1", "--bgp-nexthop"},
		{"config_file", "/etc/kube-vip/config.yaml", "no configuration file"},
		{"enable_node_labeling", "true", "does not label nodes"},
		{"vip_subnet", "24", "host addresses"},
		{"vip_preserve_on_leadership_loss", "true", "never two announcers"},
		{"lb_class_legacy_handling", "false", "lb_class_only"},
		{"vip_wireguard", "true", "WireGuard"},
		{"egress_podcidr", "10.0.0.0/16", "egress"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{tc.name: tc.value}
			for k, v := range base {
				env[k] = v
			}
			_, err := parseConfig(t, nil, env)
			if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.name) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err %v; want one line naming %s and %q", err, tc.name, tc.want)
			}
		})
	}
	for _, harmless := range [][2]string{{"vip_subnet", "32"}, {"vip_subnet", "/128"}, {"lb_class_legacy_handling", "true"},
		{"vip_preserve_on_leadership_loss", "false"}, {"enable_node_labeling", "false"}, {"dns_mode", "first"}, {"svc_leasename", "plndr-svcs-lock"}} {
		env := map[string]string{harmless[0]: harmless[1]}
		for k, v := range base {
			env[k] = v
		}
		if _, err := parseConfig(t, nil, env); err != nil {
			t.Errorf("%s=%s refused: %v", harmless[0], harmless[1], err)
		}
	}
}

// TestKubeVipHonouredEnv: svc_namespace, health_check_port and the
// interface value auto are read.
func TestKubeVipHonouredEnv(t *testing.T) {
	c, err := parseConfig(t, nil, map[string]string{"vip_arp": "true", "vip_nodename": "n1", "svc_namespace": "team-a",
		"health_check_port": "8081", "vip_interface": "auto", "vip_servicesinterface": "AUTO"})
	if err != nil {
		t.Fatal(err)
	}
	if c.ServicesNamespace != "team-a" || c.HealthPort != 8081 || c.Interface != "" || c.ServicesInterface != "" {
		t.Errorf("config %+v", c)
	}
}

// TestEnvTableMatchesCode: the compatibility list and the agent's own
// environment maps agree (docs/migration.md's table is built from the
// list).
func TestEnvTableMatchesCode(t *testing.T) {
	all := map[string]string{}
	for _, m := range []map[string]string{envFlags, bgpEnvFlags, cpEnvFlags, upnpEnvFlags} {
		for k, v := range m {
			all[k] = v
		}
	}
	c := Default()
	fs := pflag.NewFlagSet("vip-agent", pflag.ContinueOnError)
	c.AddFlags(fs)
	for _, in := range compat.Of(compat.Env) {
		flag, mapped := all[in.Name]
		switch {
		case in.Vip != "" && flag != in.Vip:
			t.Errorf("%s is listed as setting --%s, the agent maps it to %q", in.Name, in.Vip, flag)
		case in.Vip == "" && mapped:
			t.Errorf("%s is listed as %s without a flag, but the agent maps it to --%s", in.Name, in.Status, flag)
		case in.Status == compat.Honoured && in.Vip == "":
			t.Errorf("%s is honoured but names no flag", in.Name)
		}
		if in.Vip != "" && fs.Lookup(in.Vip) == nil {
			t.Errorf("%s maps to --%s, which the agent does not have", in.Name, in.Vip)
		}
	}
}
