package manifest

import (
	"bytes"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/spf13/pflag"

	"github.com/vip-lb/vip/pkg/compat"
)

// containerEnv returns the agent container's literal environment of the
// generated manifest (the last document: the Pod or the DaemonSet).
func containerEnv(t *testing.T, out []byte) map[string]string {
	t.Helper()
	docs := bytes.Split(out, []byte("\n---\n"))
	last := docs[len(docs)-1]
	var c corev1.Container
	var pod corev1.Pod
	if err := yaml.Unmarshal(last, &pod); err == nil && pod.Kind == "Pod" {
		c = pod.Spec.Containers[0]
	} else {
		var ds appsv1.DaemonSet
		if err := yaml.Unmarshal(last, &ds); err != nil || ds.Kind != "DaemonSet" {
			t.Fatalf("last document is neither a Pod nor a DaemonSet: %v\n%s", err, last)
		}
		c = ds.Spec.Template.Spec.Containers[0]
	}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	return env
}

// TestSeedGeneratorCommands replays the generator commands of kube-vip's
// documents word for word (only the program name differs).
func TestSeedGeneratorCommands(t *testing.T) {
	for _, tc := range []struct {
		doc, args string
		want      map[string]string // env values; "" = refused with err
		err       string
	}{
		{doc: "control-plane docs, first node", args: "manifest pod --interface ens192 --vip 192.168.0.75 --arp --leaderElection",
			want: map[string]string{"cp_enable": "true", "svc_enable": "false", "address": "192.168.0.75", "vip_interface": "ens192", "vip_arp": "true"}},
		{doc: "blog, ARP DaemonSet", args: "manifest daemonset --inCluster --services --arp --leaderElection",
			want: map[string]string{"cp_enable": "false", "svc_enable": "true", "vip_arp": "true"}},
		{doc: "blog, BGP DaemonSet", args: "manifest daemonset --interface lo --inCluster --services --bgp --bgpRouterID 192.168.0.1 --bgppeers 192.168.0.10:65000::false,192.168.0.11:65000::false,192.168.0.12:65000::false",
			want: map[string]string{"bgp_enable": "true", "bgp_routerid": "192.168.0.1", "vip_interface": "lo"}},
		{doc: "blog, CRI-O ARP", args: "manifest daemonset --services --arp --inCluster --leaderElection",
			want: map[string]string{"svc_enable": "true"}},
		{doc: "blog, CRI-O BGP", args: "manifest daemonset --inCluster --interface lo --services --bgp --bgpRouterID 192.168.0.1 --bgppeers 192.168.0.6:65000::false,192.168.0.7:65000::false,192.168.0.9:65000::false",
			want: map[string]string{"bgp_peers": "192.168.0.6:65000::false,192.168.0.7:65000::false,192.168.0.9:65000::false"}},
		{doc: "services docs, Equinix Metal annotations", args: "manifest daemonset --interface lo --services --bgp --annotations metal.equinix.com --inCluster",
			want: map[string]string{"annotation": "metal.equinix.com"}},
		{doc: "services docs, Equinix Metal API", args: "manifest daemonset --interface lo --services --inCluster --bgp --metal --provider-config /etc/cloud-sa/cloud-sa.json",
			err: "--metal=true is not supported: the Equinix Metal"},
		{doc: "control-plane docs, Packet", args: "manifest pod --arp=false --interface lo --vip 1.1.1.1 --leaderElection --packet --packetKey XYZ --packetProject vipTest",
			err: "--packet"},
		{doc: "issue flags", args: "manifest daemonset --inCluster --services --bgp --bgpRouterID 10.0.0.2 --peerAddress 10.0.0.1 --peerAS 65001 --peerPass s3cret --multihop " +
			"--sourceIF eth1 --bgpHoldTimer 9 --bgpKeepAliveInterval 3 --serviceInterface lo --lbClassOnly --lbClassName example.com/lb --prometheusHTTPServer :2113 --healthCheckPort 8081",
			want: map[string]string{"bgp_sourceif": "eth1", "bgp_hold_time": "9", "bgp_keepalive_interval": "3", "vip_servicesinterface": "lo",
				"lb_class_only": "true", "lb_class_name": "example.com/lb", "prometheus_server": ":2113", "health_check_port": "8081", "bgp_peers": "10.0.0.1:65001::true"}},
		{doc: "interface auto", args: "manifest daemonset --inCluster --services --arp --interface auto", want: map[string]string{"svc_enable": "true"}},
		{doc: "agent's own rule: hold time shorter than keepalive", args: "manifest daemonset --inCluster --services --bgp --bgpRouterID 10.0.0.2 --peerAddress 10.0.0.1 --bgpHoldTimer 3 --bgpKeepAliveInterval 5",
			err: "--bgp: invalid BGP configuration: keepalive interval 5s must be at least 1s and below the hold time 3s"},
		{doc: "kube-vip flag vip lacks", args: "manifest daemonset --inCluster --services --arp --wireguard", err: "--wireguard=true is not supported: WireGuard"},
		{doc: "harmless kube-vip default", args: "manifest daemonset --inCluster --services --arp --vipSubnet 32 --dnsMode first --leaderElectionType kubernetes",
			want: map[string]string{"svc_enable": "true"}},
	} {
		t.Run(tc.doc, func(t *testing.T) {
			var out bytes.Buffer
			err := Command(append(strings.Fields(tc.args)[1:], testImageFlag), &out)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("err %v; want one line with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			env := containerEnv(t, out.Bytes())
			for k, v := range tc.want {
				if env[k] != v {
					t.Errorf("%s=%q; want %q (env %v)", k, env[k], v, env)
				}
			}
			if _, ok := env["bgp_peerpass"]; ok || strings.Contains(out.String(), "s3cret\n") && !strings.Contains(out.String(), "kind: Secret") {
				t.Errorf("the peer password is in the Pod spec:\n%s", out.String())
			}
			if _, ok := env["vip_interface"]; ok && strings.EqualFold(env["vip_interface"], "auto") {
				t.Error("interface auto written as a name")
			}
		})
	}
}

// TestManifestRBAC: `manifest rbac` prints the agent's ServiceAccount and
// RBAC only.
func TestManifestRBAC(t *testing.T) {
	var out bytes.Buffer
	if err := Command([]string{"rbac", "--namespace", "vip"}, &out); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{"kind: ServiceAccount", "kind: ClusterRole", "kind: ClusterRoleBinding", "namespace: vip"} {
		if !strings.Contains(s, want) {
			t.Errorf("no %q in:\n%s", want, s)
		}
	}
	if strings.Contains(s, "kind: DaemonSet") || strings.Contains(s, "kind: Pod") {
		t.Errorf("rbac printed a workload:\n%s", s)
	}
}

// TestGeneratorFlagsMatchList: every kube-vip flag of the compatibility
// list is a generator flag; the honoured ones are wired to options, not
// merely registered from the list.
func TestGeneratorFlagsMatchList(t *testing.T) {
	fs := pflag.NewFlagSet("vip-agent manifest", pflag.ContinueOnError)
	m := newManifestFlags(fs)
	n := 0
	for _, in := range compat.Of(compat.Flag) {
		n++
		if fs.Lookup(in.Name) == nil {
			t.Errorf("--%s is in the list but not a generator flag", in.Name)
		}
		if _, auto := m.compatFlags[in.Name]; auto && in.Status == compat.Honoured {
			t.Errorf("--%s is listed as honoured but the generator does not read it", in.Name)
		}
	}
	if n < 40 {
		t.Errorf("only %d kube-vip flags listed", n)
	}
}
