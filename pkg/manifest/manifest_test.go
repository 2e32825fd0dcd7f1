package manifest

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes/scheme"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

const testImage = "ghcr.io/vip-lb/vip-agent:v0.0.0-test"

// goldenCases are the manifests users generate most, one golden file each.
var goldenCases = []struct {
	name string
	form Form
	o    Options
}{
	{"pod-arp", FormPod, Options{
		ARP: true, ControlPlane: true, Services: true, LeaderElection: true,
		Interface: "eth0", Address: "192.168.0.40",
	}},
	{"pod-superadmin-dns", FormPod, Options{
		ARP: true, ControlPlane: true, Address: "cp.example.internal.",
		KubeconfigPath: SuperAdminKubeconfig, LeaseDuration: 3 * time.Second,
		RenewDeadline: 2 * time.Second, RetryPeriod: 500 * time.Millisecond,
	}},
	{"pod-bgp", FormPod, Options{
		BGP: true, ControlPlane: true, Services: true, LeaderElection: false,
		Interface: "lo", Address: "10.50.0.10", RouterID: "192.168.0.2", LocalAS: 65000,
		Peers: "192.168.0.1:65001::false,192.168.0.254:65001::false",
	}},
	{"daemonset-services", FormDaemonSet, Options{
		ARP: true, Services: true, InCluster: true, Interface: "eth0",
	}},
	{"daemonset-controlplane", FormDaemonSet, Options{
		ARP: true, ControlPlane: true, Services: true, Taint: true,
		Interface: "ens192", Address: "192.168.0.40", Port: 8443,
	}},
	{"k3s", FormK3s, Options{
		ARP: true, ControlPlane: true, Services: true, LeaderElection: true,
		Interface: "eth0", Address: "192.168.0.40",
	}},
	{"k3s-bgp-annotations", FormK3s, Options{
		BGP: true, Services: true, Annotations: "kube-vip.io", LocalAS: 65000,
	}},
}

func TestGolden(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.o
			o.Image = testImage
			got, err := Render(tc.form, o)
			if err != nil {
				t.Fatal(err)
			}
			decodeStrict(t, got)
			got = maskLinkKey(got)
			path := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./pkg/manifest -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from the output; rerun with -update after checking:\n%s", path, got)
			}
		})
	}
}

// decodeStrict decodes every document into its typed object, failing on
// unknown or duplicate fields.
func decodeStrict(t *testing.T, data []byte) []runtime.Object {
	t.Helper()
	dec := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()
	var out []runtime.Object
	for _, doc := range splitDocs(t, data) {
		obj, _, err := dec.Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("strict decoding: %v\n%s", err, doc)
		}
		out = append(out, obj)
	}
	return out
}

func splitDocs(t *testing.T, data []byte) [][]byte {
	t.Helper()
	var docs [][]byte
	for _, d := range bytes.Split(data, []byte("\n---\n")) {
		if len(bytes.TrimSpace(d)) > 0 {
			docs = append(docs, d)
		}
	}
	return docs
}

func TestPodShape(t *testing.T) {
	objs, err := Objects(FormPod, Options{Image: testImage, ARP: true, ControlPlane: true, Address: "10.1.0.5"})
	if err != nil {
		t.Fatal(err)
	}
	p := objs[0].(*corev1.Pod)
	c := p.Spec.Containers[0]
	if !p.Spec.HostNetwork {
		t.Error("not hostNetwork")
	}
	if got := c.SecurityContext.Capabilities.Add; !reflect.DeepEqual(got, []corev1.Capability{"NET_ADMIN", "NET_RAW"}) {
		t.Errorf("capabilities %v", got)
	}
	if *c.SecurityContext.AllowPrivilegeEscalation || c.SecurityContext.Privileged != nil {
		t.Error("privileged")
	}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	for k, v := range map[string]string{
		"cp_enable": "true", "svc_enable": "false", "address": "10.1.0.5", "vip_arp": "true",
		"k8s_config_file": "/etc/kubernetes/admin.conf", "vip_leasename": "plndr-cp-lock", "port": "6443",
	} {
		if env[k] != v {
			t.Errorf("env %s = %q, want %q", k, env[k], v)
		}
	}
	if _, ok := env["vip_leaseduration"]; ok {
		t.Error("lease duration written although not asked for: the agent's fast default must apply")
	}
	if p.Spec.Volumes[1].HostPath.Path != DefaultKubeconfigPath {
		t.Errorf("kubeconfig volume %+v", p.Spec.Volumes[1])
	}

	objs, _ = Objects(FormPod, Options{Image: testImage, ARP: true, ControlPlane: true, Address: "10.1.0.5", KubeconfigPath: SuperAdminKubeconfig})
	p = objs[0].(*corev1.Pod)
	if p.Spec.Volumes[1].HostPath.Path != SuperAdminKubeconfig || p.Spec.Containers[0].VolumeMounts[1].MountPath != DefaultKubeconfigPath {
		t.Errorf("super-admin: the host file must be mounted where the agent reads its kubeconfig: %+v %+v",
			p.Spec.Volumes[1], p.Spec.Containers[0].VolumeMounts[1])
	}
}

func TestK3sIsInClusterOnServers(t *testing.T) {
	objs, err := Objects(FormK3s, Options{Image: testImage, ARP: true, ControlPlane: true, Address: "10.1.0.5"})
	if err != nil {
		t.Fatal(err)
	}
	ds := objs[len(objs)-1].(*appsv1.DaemonSet)
	spec := ds.Spec.Template.Spec
	if spec.ServiceAccountName != Name || spec.Affinity == nil {
		t.Fatalf("k3s DaemonSet: serviceAccount %q affinity %v", spec.ServiceAccountName, spec.Affinity)
	}
	for _, v := range spec.Volumes {
		if v.Name == "kubeconfig" {
			t.Error("k3s DaemonSet mounts a host kubeconfig")
		}
	}
	for _, e := range spec.Containers[0].Env {
		if e.Name == "k8s_config_file" {
			t.Error("k3s DaemonSet sets k8s_config_file")
		}
	}
}

func TestInvalid(t *testing.T) {
	ok := Options{Image: testImage, ARP: true, ControlPlane: true, Address: "10.1.0.5"}
	with := func(f func(*Options)) Options {
		o := ok
		f(&o)
		return o
	}
	cases := []struct {
		name string
		form Form
		o    Options
		want string
	}{
		{"arp and bgp", FormPod, with(func(o *Options) { o.BGP = true }), "--arp and --bgp"},
		{"no mode", FormPod, with(func(o *Options) { o.ARP = false }), "no advertisement mode"},
		{"nothing to do", FormPod, with(func(o *Options) { o.ControlPlane = false }), "nothing to do"},
		{"controlplane without address", FormPod, with(func(o *Options) { o.Address = "" }), "--controlplane needs --address"},
		{"bgp without peers", FormPod, with(func(o *Options) { o.ARP, o.BGP, o.RouterID, o.LocalAS = false, true, "10.0.0.1", 65000 }), "no peers (--bgppeers"},
		{"bgp without router id", FormPod, with(func(o *Options) { o.ARP, o.BGP, o.Peers, o.LocalAS = false, true, "10.0.0.2:65001", 65000 }), "router ID"},
		{"bgp bad peers", FormPod, with(func(o *Options) { o.ARP, o.BGP, o.Peers = false, true, "fd00::1:65000" }), "--bgppeers"},
		{"bgp flags without bgp", FormPod, with(func(o *Options) { o.Peers = "10.0.0.2:65001" }), "need --bgp"},
		{"pod in cluster", FormPod, with(func(o *Options) { o.InCluster = true }), "--inCluster needs a DaemonSet"},
		{"pod taint", FormPod, with(func(o *Options) { o.Taint = true }), "--taint applies to DaemonSets"},
		{"daemonset admin.conf everywhere", FormDaemonSet, ok, "add --taint or --inCluster"},
		{"address with prefix", FormPod, with(func(o *Options) { o.Address = "10.1.0.5/24" }), "--address"},
		{"loopback address", FormPod, with(func(o *Options) { o.Address = "127.0.0.1" }), "not usable"},
		{"bad dns name", FormPod, with(func(o *Options) { o.Address = "cp_1.example" }), "neither an IP address nor a DNS name"},
		{"renew >= duration", FormPod, with(func(o *Options) { o.LeaseDuration, o.RenewDeadline = time.Second, 2*time.Second }), "--leaseRenewDuration"},
		{"retry >= renew", FormPod, with(func(o *Options) { o.RenewDeadline, o.RetryPeriod = time.Second, time.Second }), "--leaseRetry"},
		{"port", FormPod, with(func(o *Options) { o.Port = 70000 }), "--port"},
		{"relative kubeconfig", FormPod, with(func(o *Options) { o.KubeconfigPath = "admin.conf" }), "absolute"},
		{"both credentials", FormDaemonSet, with(func(o *Options) { o.InCluster, o.KubeconfigPath = true, "/etc/kubernetes/admin.conf" }), "both set"},
		{"bad interface", FormPod, with(func(o *Options) { o.Interface = "eth0 eth1" }), "--interface"},
		{"no image", FormPod, with(func(o *Options) { o.Image = "" }), "no image"},
		{"unknown form", Form("deployment"), ok, "unknown form"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Render(tc.form, tc.o)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("err = %q, want one line containing %q", err, tc.want)
			}
		})
	}
}

// TestPasswordsInSecret: a generated DaemonSet carries BGP passwords in a
// Secret mounted for --bgp-password-file, never in the Pod spec; a static
// Pod mounts a host file with --bgp-password-file.
func TestPasswordsInSecret(t *testing.T) {
	base := Options{Image: "img", BGP: true, Services: true, InCluster: true, LocalAS: 65001, RouterID: "10.0.0.5",
		Peers: "10.0.0.1:65000:Tops3cret:true,[fd00::1]:65000:other,10.0.0.2:65000"}
	objs, err := Objects(FormDaemonSet, base)
	if err != nil {
		t.Fatal(err)
	}
	var sec *corev1.Secret
	var ds *appsv1.DaemonSet
	for _, o := range objs {
		switch v := o.(type) {
		case *corev1.Secret:
			sec = v
		case *appsv1.DaemonSet:
			ds = v
		}
	}
	if sec == nil || ds == nil {
		t.Fatalf("no Secret or DaemonSet in %d objects", len(objs))
	}
	if want := map[string]string{"10.0.0.1": "Tops3cret", "fd00--1": "other"}; !reflect.DeepEqual(sec.StringData, want) {
		t.Errorf("Secret %v, want %v", sec.StringData, want)
	}
	out, err := Render(FormDaemonSet, base)
	if err != nil {
		t.Fatal(err)
	}
	dsYAML := string(out[strings.Index(string(out), "kind: DaemonSet"):])
	if strings.Contains(dsYAML, "Tops3cret") || strings.Contains(dsYAML, "other") {
		t.Errorf("the DaemonSet carries a password:\n%s", dsYAML)
	}
	c := ds.Spec.Template.Spec.Containers[0]
	if !slices.Contains(c.Args, "--bgp-password-file="+passwordMount) {
		t.Errorf("args %v", c.Args)
	}
	for _, e := range c.Env {
		if e.Name == "bgp_peers" && e.Value != "10.0.0.1:65000::true,[fd00::1]:65000::false,10.0.0.2:65000::false" {
			t.Errorf("bgp_peers = %q", e.Value)
		}
	}

	pod := base
	pod.InCluster, pod.Peers, pod.PasswordFile = false, "10.0.0.1:65000", "/etc/vip/bgp"
	objs, err = Objects(FormPod, pod)
	if err != nil {
		t.Fatal(err)
	}
	p := objs[0].(*corev1.Pod)
	found := false
	for _, v := range p.Spec.Volumes {
		found = found || (v.HostPath != nil && v.HostPath.Path == "/etc/vip/bgp")
	}
	if !found || !slices.Contains(p.Spec.Containers[0].Args, "--bgp-password-file="+passwordMount) {
		t.Errorf("static Pod does not mount the password file: %+v", p.Spec)
	}
	pod.Peers = "10.0.0.1:65000:inline"
	if _, err := Objects(FormPod, pod); err == nil || !errors.Is(err, ErrInvalid) || strings.Contains(err.Error(), "inline") {
		t.Errorf("inline password and file: %v", err)
	}
	ds2 := base
	ds2.PasswordFile = "/etc/vip/bgp"
	if _, err := Objects(FormDaemonSet, ds2); err == nil {
		t.Error("--bgp-password-file accepted for a DaemonSet")
	}
}

// linkKeyLine is a generated heartbeat key in a rendering.
var linkKeyLine = regexp.MustCompile(`(?m)^(stringData:\n  ` + LinkKeyItem + `: )[A-Za-z0-9+/]{43}=$`)

// maskLinkKey replaces the random heartbeat key of a rendering by a
// placeholder, so renderings compare with golden files that hold no key.
func maskLinkKey(b []byte) []byte {
	return linkKeyLine.ReplaceAll(b, []byte("${1}<drawn at rendering>"))
}
