package agentconfig

import (
	"errors"
	"strings"
	"testing"
)

func TestChooseCredentials(t *testing.T) {
	inCluster := map[string]string{"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
	for _, tc := range []struct {
		name       string
		kubeconfig string
		env        map[string]string
		files      []string
		want       CredentialSource
		wantPath   string
		err        string
	}{
		{name: "explicit wins over everything", kubeconfig: "/k", env: inCluster, files: []string{inClusterToken, kubeadmKubeconfig}, want: credExplicit, wantPath: "/k"},
		{name: "in-cluster before admin.conf", env: inCluster, files: []string{inClusterToken, kubeadmKubeconfig}, want: credInCluster},
		{name: "kubeadm static Pod: admin.conf mounted, nothing set", files: []string{kubeadmKubeconfig}, want: credKubeadm, wantPath: kubeadmKubeconfig},
		{name: "service variables without a token are not in-cluster", env: inCluster, files: []string{kubeadmKubeconfig}, want: credKubeadm, wantPath: kubeadmKubeconfig},
		{name: "nothing at all", env: inCluster, err: "no API credentials"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := HostFiles{
				env: func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok },
				exists: func(p string) bool {
					for _, f := range tc.files {
						if f == p {
							return true
						}
					}
					return false
				},
			}
			src, path, err := chooseCredentials(tc.kubeconfig, h)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, ErrConfig) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("err %v; want one ErrConfig line containing %q", err, tc.err)
				}
				return
			}
			if err != nil || src != tc.want || path != tc.wantPath {
				t.Fatalf("got %q %q %v; want %q %q", src, path, err, tc.want, tc.wantPath)
			}
		})
	}
}

// TestKubeVipCompatDefaults: kube-vip's flag and environment names and
// defaults that differ from vip's own.
func TestKubeVipCompatDefaults(t *testing.T) {
	cp := map[string]string{"vip_arp": "true", "cp_enable": "true", "address": "192.168.0.75", "vip_nodename": "n1"}
	with := func(m map[string]string, kv ...string) map[string]string {
		out := map[string]string{}
		for k, v := range m {
			out[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	for _, tc := range []struct {
		name       string
		args       []string
		env        map[string]string
		services   bool
		kubeconfig string
	}{
		{name: "cp_enable alone: Services off", env: cp, services: false},
		{name: "cp_enable with svc_enable=true", env: with(cp, "svc_enable", "true"), services: true},
		{name: "--controlplane --services", args: []string{"--controlplane", "--services", "--arp", "--address=10.0.0.5"}, env: map[string]string{"vip_nodename": "n1"}, services: true},
		{name: "--controlplane alone", args: []string{"--controlplane", "--arp", "--address=10.0.0.5"}, env: map[string]string{"vip_nodename": "n1"}, services: false},
		{name: "Services only: default on", env: map[string]string{"vip_arp": "true", "vip_nodename": "n1"}, services: true},
		{name: "--k8sConfigPath wins over the environment", args: []string{"--k8sConfigPath=/etc/kubernetes/super-admin.conf"},
			env: with(cp, "k8s_config_file", "/etc/kubernetes/admin.conf", "KUBECONFIG", "/x"), kubeconfig: "/etc/kubernetes/super-admin.conf"},
		{name: "k8s_config_file", env: with(cp, "k8s_config_file", "/etc/kubernetes/admin.conf"), kubeconfig: "/etc/kubernetes/admin.conf"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseConfig(t, tc.args, tc.env)
			if err != nil {
				t.Fatal(err)
			}
			if tc.kubeconfig != "" {
				if c.Kubeconfig != tc.kubeconfig {
					t.Errorf("kubeconfig %q; want %q", c.Kubeconfig, tc.kubeconfig)
				}
				return
			}
			if c.Services != tc.services {
				t.Errorf("services %v; want %v", c.Services, tc.services)
			}
		})
	}
}
