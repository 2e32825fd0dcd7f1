package agentconfig

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// parseConfig parses args and env as vip-agent does, without starting
// anything.
func parseConfig(t *testing.T, args []string, env map[string]string) (Config, error) {
	t.Helper()
	c, _, err := Parse(args, MapEnv(env), nil)
	if err != nil {
		return *c, err
	}
	return *c, c.Validate()
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
	if !c.ControlPlane || c.Services || c.CP.Address != "192.168.0.40" || c.Interface != "ens192" || c.NodeName != "cp1" {
		t.Errorf("config %+v", c)
	}
	if c.LeaseDuration != 5*time.Second || c.RenewDeadline != 3*time.Second || c.RetryPeriod != time.Second {
		t.Errorf("lease timings %v %v %v, want kube-vip's 5s 3s 1s", c.LeaseDuration, c.RenewDeadline, c.RetryPeriod)
	}
	if u, _ := c.CP.LocalURL(); u != "https://127.0.0.1:6443" {
		t.Errorf("local API server %q", u)
	}
}

func TestControlPlaneDefaultsAreFast(t *testing.T) {
	c, err := parseConfig(t, []string{"--arp", "--controlplane", "--address", "cp.example.internal", "--node-name", "cp1", "--port", "8443"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.LeaseDuration != 1500*time.Millisecond || c.RenewDeadline != time.Second || c.RetryPeriod != 250*time.Millisecond {
		t.Errorf("default lease timings %v %v %v", c.LeaseDuration, c.RenewDeadline, c.RetryPeriod)
	}
	if u, _ := c.CP.LocalURL(); u != "https://127.0.0.1:8443" {
		t.Errorf("local API server %q", u)
	}
	if c.CP.LeaseName != "plndr-cp-lock" || c.Namespace != "kube-system" {
		t.Errorf("lease %s/%s", c.Namespace, c.CP.LeaseName)
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
		p.LocalAPIServer = in
		if got, err := p.LocalURL(); err != nil || got != want {
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
		if err != nil && !errors.Is(err, ErrConfig) {
			t.Errorf("%v: %v does not wrap ErrConfig", tc.args, err)
		}
	}
}
