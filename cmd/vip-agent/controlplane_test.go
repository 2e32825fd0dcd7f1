package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// parseConfig parses args and env as run does, without starting anything.
func parseConfig(t *testing.T, args []string, env map[string]string) (config, error) {
	t.Helper()
	c := defaultConfig()
	fs := pflag.NewFlagSet("vip-agent", pflag.ContinueOnError)
	c.flags(fs)
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if err := applyEnv(fs, mapEnv(env)); err != nil {
		return c, err
	}
	return c, c.validate()
}

func TestControlPlaneFromKubeVipEnv(t *testing.T) {
	// The environment of a kube-vip static Pod (control plane only).
	c, err := parseConfig(t, []string{"manager"}[1:], map[string]string{
		"vip_arp": "true", "port": "6443", "vip_nodename": "cp1", "vip_interface": "ens192", "vip_cidr": "32",
		"cp_enable": "true", "cp_namespace": "kube-system", "svc_enable": "false", "vip_leaderelection": "true",
		"vip_leasename": "plndr-cp-lock", "vip_leaseduration": "5", "vip_renewdeadline": "3", "vip_retryperiod": "1",
		"address": "192.168.0.40", "prometheus_server": ":2112",
	})
	if err != nil {
		t.Fatal(err)
	}
	if !c.controlPlane || c.services || c.cp.address != "192.168.0.40" || c.iface != "ens192" || c.nodeName != "cp1" {
		t.Errorf("config %+v", c)
	}
	if c.leaseDuration != 5*time.Second || c.renewDeadline != 3*time.Second || c.retryPeriod != time.Second {
		t.Errorf("lease timings %v %v %v, want kube-vip's 5s 3s 1s", c.leaseDuration, c.renewDeadline, c.retryPeriod)
	}
	if u, _ := c.cp.localURL(); u != "https://127.0.0.1:6443" {
		t.Errorf("local API server %q", u)
	}
}

func TestControlPlaneDefaultsAreFast(t *testing.T) {
	c, err := parseConfig(t, []string{"--arp", "--controlplane", "--address", "cp.example.internal", "--node-name", "cp1", "--port", "8443"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.leaseDuration != 1500*time.Millisecond || c.renewDeadline != time.Second || c.retryPeriod != 250*time.Millisecond {
		t.Errorf("default lease timings %v %v %v", c.leaseDuration, c.renewDeadline, c.retryPeriod)
	}
	if u, _ := c.cp.localURL(); u != "https://127.0.0.1:8443" {
		t.Errorf("local API server %q", u)
	}
	if c.cp.leaseName != "plndr-cp-lock" || c.namespace != "kube-system" {
		t.Errorf("lease %s/%s", c.namespace, c.cp.leaseName)
	}
}

func TestLocalAPIServerForms(t *testing.T) {
	for in, want := range map[string]string{
		"":                        "https://127.0.0.1:6443",
		"10.0.0.5":                "https://10.0.0.5:6443",
		"10.0.0.5:7443":           "https://10.0.0.5:7443",
		"https://kubernetes:6443": "https://kubernetes:6443",
		"https://[fd00::5]:6443/": "https://[fd00::5]:6443",
		"localhost":               "https://localhost:6443",
	} {
		p := defaultCPConfig()
		p.localAPIServer = in
		if got, err := p.localURL(); err != nil || got != want {
			t.Errorf("localURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestControlPlaneConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--arp", "--controlplane"}, nil, "needs --address"},
		{[]string{"--arp", "--controlplane", "--address", "127.0.0.1"}, nil, "cannot be a virtual IP"},
		{[]string{"--arp", "--controlplane", "--address", "not_a_name"}, nil, "neither an IP address nor a DNS name"},
		{[]string{"--arp", "--controlplane", "--address", "10.0.0.1", "--vip-cidr", "x"}, nil, "prefix length"},
		{[]string{"--arp", "--controlplane", "--address", "10.0.0.1", "--lease-duration", "1", "--lease-renew-deadline", "1"}, nil, "lease timings"},
		{[]string{"--arp", "--controlplane", "--address", "10.0.0.1", "--local-apiserver", "ftp://x"}, nil, "--local-apiserver"},
		{[]string{"--arp", "--services=false"}, nil, "leaves nothing to do"},
		{nil, map[string]string{"vip_arp": "true", "cp_enable": "true", "vip_address": "10.0.0.1", "vip_ddns": "true"}, "dynamic DNS"},
	} {
		_, err := parseConfig(t, append(tc.args, "--node-name", "n1"), tc.env)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: err = %v, want %q", tc.args, tc.env, err, tc.want)
		}
		if err != nil && !errors.Is(err, errConfig) {
			t.Errorf("%v: %v does not wrap errConfig", tc.args, err)
		}
	}
}
