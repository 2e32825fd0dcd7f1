package manifest

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/vip-lb/vip/pkg/agentconfig"
)

const testImageFlag = "--image=ghcr.io/vip-lb/vip-agent:v0.0.0-test"

// TestManifestCommandMatchesGolden runs the seed commands and compares with
// pkg/manifest's golden files, so the flags map onto the options the golden
// tests use.
func TestManifestCommandMatchesGolden(t *testing.T) {
	cases := []struct{ golden, args string }{
		{"pod-arp", "pod --interface eth0 --address 192.168.0.40 --controlplane --services --arp --leaderElection"},
		{"pod-arp", "pod --interface=eth0 --vip=192.168.0.40 --controlplane --services --arp --leaderElection --servicesElection --enableEndpointSlices"},
		{"pod-superadmin-dns", "pod --arp --controlplane --address cp.example.internal. --kubeconfig-path /etc/kubernetes/super-admin.conf --leaseDuration 3 --leaseRenewDuration 2 --leaseRetry 500ms"},
		{"pod-superadmin-dns", "pod --arp --controlplane --address cp.example.internal. --k8sConfigPath /etc/kubernetes/super-admin.conf --leaseDuration 3 --leaseRenewDuration 2 --leaseRetry 500ms"},
		{"pod-bgp", "pod --interface lo --address 10.50.0.10 --controlplane --services --bgp --bgpRouterID 192.168.0.2 --localAS 65000 --bgppeers 192.168.0.1:65001::false,192.168.0.254:65001::false"},
		{"daemonset-services", "daemonset --interface eth0 --services --inCluster --arp"},
		{"daemonset-controlplane", "daemonset --interface ens192 --address 192.168.0.40 --port 8443 --controlplane --services --arp --taint"},
		{"k3s", "daemonset --k3s --interface eth0 --address 192.168.0.40 --controlplane --services --arp --leaderElection"},
		{"k3s", "daemonset --k3s --inCluster --taint --interface eth0 --address 192.168.0.40 --controlplane --services --arp --leaderElection"},
		{"k3s-bgp-annotations", "daemonset --k3s --services --bgp --annotations kube-vip.io"},
	}
	for _, tc := range cases {
		t.Run(tc.golden, func(t *testing.T) {
			var out bytes.Buffer
			if err := Command(append(strings.Fields(tc.args), testImageFlag), &out); err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile("testdata/" + tc.golden + ".golden")
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(maskLinkKey(out.Bytes()), want) {
				t.Errorf("vip-agent manifest %s differs from %s.golden:\n%s", tc.args, tc.golden, out.String())
			}
		})
	}
}

func TestManifestErrors(t *testing.T) {
	cases := []struct{ args, want string }{
		{"pod --arp --bgp --services", "--arp and --bgp"},
		{"pod --controlplane --arp", "--controlplane needs --address"},
		{"pod --bgp --services --bgpRouterID 10.0.0.1", "--bgp: invalid BGP configuration: no peers (--bgppeers"},
		{"pod --services", "no advertisement mode"},
		{"pod --arp", "nothing to do"},
		{"", "which manifest?"},
		{"deployment --arp --services", `unknown manifest "deployment"`},
		{"pod --k3s --arp --services", "daemonset --k3s"},
		{"pod --arp --services --inCluster", "--inCluster needs a DaemonSet"},
		{"pod --arp --controlplane --address 10.0.0.5 --ddns", "--ddns"},
		{"pod --arp --controlplane --vip 10.0.0.5 --address 10.0.0.6", "--vip and --address differ"},
		{"pod --arp --controlplane --address 10.0.0.5 --enableLoadBalancer", "IPVS"},
		{"pod --arp --controlplane --address 10.0.0.5 --leaseDuration abc", "leaseDuration"},
		{"pod --arp --controlplane --address 10.0.0.5 --leaseDuration 0", "not positive"},
		{"pod --arp --services --nope", "unknown flag: --nope"},
		{"pod extra --arp --services", "unexpected arguments"},
	}
	for _, tc := range cases {
		t.Run(tc.args, func(t *testing.T) {
			var out bytes.Buffer
			err := Command(strings.Fields(tc.args), &out)
			if !errors.Is(err, agentconfig.ErrConfig) {
				t.Fatalf("err = %v, want agentconfig.ErrConfig", err)
			}
			if msg := err.Error(); !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") {
				t.Errorf("err = %q, want one line containing %q", msg, tc.want)
			}
			if out.Len() != 0 {
				t.Errorf("printed %q on error", out.String())
			}
		})
	}
}

func TestManifestHelp(t *testing.T) {
	var out bytes.Buffer
	if err := Command([]string{"--help"}, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"vip-agent manifest pod|daemonset", "--kubeconfig-path", "--controlplane", "--k3s"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("help lacks %q", want)
		}
	}
}

// FuzzManifestArgs feeds arbitrary command lines to the generator: it must
// never panic, every error is one line, and whatever it accepts renders to
// YAML documents that parse.
func FuzzManifestArgs(f *testing.F) {
	for _, s := range []string{
		"pod --interface eth0 --address 192.168.0.40 --controlplane --services --arp --leaderElection",
		"daemonset --k3s --services --bgp --annotations kube-vip.io",
		"daemonset --interface ens192 --address cp.example --controlplane --arp --taint --leaseDuration 2 --leaseRetry 100ms",
		"pod --bgp --controlplane --address 10.0.0.1 --bgpRouterID 10.0.0.2 --bgppeers [fd00::1]:65001:secret:true",
		"pod --arp --bgp",
		"daemonset --inCluster --kubeconfig-path /x --arp --services",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		var out bytes.Buffer
		err := Command(strings.Fields(line), &out)
		if err != nil {
			if !errors.Is(err, agentconfig.ErrConfig) {
				t.Fatalf("error %v does not wrap agentconfig.ErrConfig", err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		if bytes.HasPrefix(out.Bytes(), []byte("Usage:")) {
			return // --help
		}
		for i, doc := range bytes.Split(out.Bytes(), []byte("\n---\n")) {
			var m map[string]any
			if err := yaml.Unmarshal(doc, &m); err != nil {
				t.Fatalf("document %d does not parse: %v\n%s", i, err, doc)
			}
			if m["kind"] == nil || m["apiVersion"] == nil {
				t.Fatalf("document %d has no kind or apiVersion:\n%s", i, doc)
			}
		}
	})
}

func TestCommandDDNS(t *testing.T) {
	var out bytes.Buffer
	if err := Command(strings.Fields("pod --arp --controlplane --address k8s-api.lab --interface eth0 --ddns"), &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "name: vip_ddns\n      value: \"true\"") {
		t.Errorf("manifest lacks vip_ddns=true:\n%s", out.String())
	}
	for args, want := range map[string]string{
		"pod --arp --controlplane --address 10.0.0.5 --interface eth0 --ddns": "--ddns needs a DNS name",
		"pod --arp --controlplane --address k8s-api.lab --ddns":               "--ddns needs --interface",
		"pod --arp --services --interface eth0 --ddns":                        "--ddns obtains the control-plane address",
	} {
		out.Reset()
		if err := Command(strings.Fields(args), &out); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want %q", args, err, want)
		}
	}
}
