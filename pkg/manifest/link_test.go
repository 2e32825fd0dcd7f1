package manifest

import (
	"bytes"
	"encoding/base64"
	"errors"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/vip-lb/vip/pkg/agentconfig"
)

// linkParts returns a rendering's link Secret (nil if none) and DaemonSet.
func linkParts(t *testing.T, form Form, o Options) (*corev1.Secret, *appsv1.DaemonSet, *corev1.Pod) {
	t.Helper()
	objs, err := Objects(form, o)
	if err != nil {
		t.Fatal(err)
	}
	var sec *corev1.Secret
	var ds *appsv1.DaemonSet
	var pod *corev1.Pod
	for _, obj := range objs {
		switch v := obj.(type) {
		case *corev1.Secret:
			if v.Name == LinkKeySecret {
				sec = v
			}
		case *appsv1.DaemonSet:
			ds = v
		case *corev1.Pod:
			pod = v
		}
	}
	return sec, ds, pod
}

// TestLinkLivenessDefault: a generated DaemonSet serving Services in ARP
// mode runs --liveness=link with the key Secret (a fresh key) mounted
// read-only for --link-key-file; where liveness is not used or the Secret
// cannot be mounted the agent keeps its lease default, with no Secret and
// no flags; --link-key-secret mounts an existing Secret and prints none.
func TestLinkLivenessDefault(t *testing.T) {
	svc := Options{Image: testImage, ARP: true, Services: true, InCluster: true}
	with := func(f func(*Options)) Options {
		o := svc
		f(&o)
		return o
	}
	for _, tc := range []struct {
		name         string
		form         Form
		o            Options
		link         bool
		secret       string // mounted Secret
		printsSecret bool
	}{
		{"daemonset services", FormDaemonSet, svc, true, LinkKeySecret, true},
		{"k3s services", FormK3s, svc, true, LinkKeySecret, true},
		{"daemonset control plane and services", FormDaemonSet, with(func(o *Options) { o.ControlPlane, o.Address = true, "10.1.0.5" }), true, LinkKeySecret, true},
		{"existing secret", FormDaemonSet, with(func(o *Options) { o.LinkKeySecret = "my-key" }), true, "my-key", false},
		{"explicit lease", FormDaemonSet, with(func(o *Options) { o.Liveness = agentconfig.LivenessLease }), false, "", false},
		{"control plane only", FormDaemonSet, with(func(o *Options) { o.Services, o.ControlPlane, o.Address = false, true, "10.1.0.5" }), false, "", false},
		{"bgp", FormDaemonSet, with(func(o *Options) {
			o.ARP, o.BGP, o.RouterID, o.LocalAS, o.Peers = false, true, "10.0.0.1", 65000, "10.0.0.2:65001"
		}), false, "", false},
		{"static pod", FormPod, with(func(o *Options) { o.InCluster = false }), false, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sec, ds, pod := linkParts(t, tc.form, tc.o)
			var spec corev1.PodSpec
			if ds != nil {
				spec = ds.Spec.Template.Spec
			} else {
				spec = pod.Spec
			}
			c := spec.Containers[0]
			hasArgs := slices.Contains(c.Args, "--liveness=link") && slices.Contains(c.Args, "--link-key-file="+linkKeyMount+"/"+LinkKeyItem)
			if hasArgs != tc.link || (!tc.link && slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--link") || strings.HasPrefix(a, "--liveness") })) {
				t.Errorf("args %v, want link mode %v", c.Args, tc.link)
			}
			if (sec != nil) != tc.printsSecret {
				t.Errorf("Secret %s printed: %v, want %v", LinkKeySecret, sec != nil, tc.printsSecret)
			}
			var mounted string
			for _, v := range spec.Volumes {
				if v.Name == "link-key" {
					mounted = v.Secret.SecretName
					if *v.Secret.DefaultMode != 0o400 || len(v.Secret.Items) != 1 || v.Secret.Items[0].Key != LinkKeyItem {
						t.Errorf("key volume %+v: want item %q, mode 0400", v.Secret, LinkKeyItem)
					}
				}
			}
			if mounted != tc.secret {
				t.Errorf("key volume from Secret %q, want %q", mounted, tc.secret)
			}
			if tc.link && !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
				return m.Name == "link-key" && m.MountPath == linkKeyMount && m.ReadOnly
			}) {
				t.Errorf("mounts %v: no read-only key mount", c.VolumeMounts)
			}
			if sec != nil {
				if sec.Namespace != DefaultNamespace || len(sec.StringData) != 1 {
					t.Errorf("Secret %s/%s data %d items", sec.Namespace, sec.Name, len(sec.StringData))
				}
				raw, err := base64.StdEncoding.DecodeString(sec.StringData[LinkKeyItem])
				if err != nil || len(raw) != LinkKeyBytes {
					t.Errorf("key: %d bytes (%v), want %d random bytes base64-encoded", len(raw), err, LinkKeyBytes)
				}
			}
			if err := checkWithAgent(tc.form, tc.o); err != nil {
				t.Errorf("the agent refuses it: %v", err)
			}
		})
	}
}

// TestLinkKeyDrawnEachRendering: two renderings carry different keys, and
// the key appears in the Secret only (not in the header, the arguments or
// the environment).
func TestLinkKeyDrawnEachRendering(t *testing.T) {
	o := Options{Image: testImage, ARP: true, Services: true, InCluster: true}
	var keys []string
	for range 2 {
		b, err := Render(FormDaemonSet, o)
		if err != nil {
			t.Fatal(err)
		}
		m := linkKeyLine.FindSubmatch(b)
		if m == nil {
			t.Fatalf("no key in the rendering:\n%s", b)
		}
		key := strings.TrimPrefix(string(m[0]), string(m[1]))
		if n := bytes.Count(b, []byte(key)); n != 1 {
			t.Errorf("the key appears %d times in the rendering, want once (the Secret)", n)
		}
		keys = append(keys, key)
	}
	if keys[0] == keys[1] {
		t.Errorf("two renderings carry the same key")
	}
}

// TestLinkInvalid: link mode where it cannot work is refused by name.
func TestLinkInvalid(t *testing.T) {
	svc := Options{Image: testImage, ARP: true, Services: true, InCluster: true, Liveness: agentconfig.LivenessLink}
	with := func(f func(*Options)) Options {
		o := svc
		f(&o)
		return o
	}
	for _, tc := range []struct {
		name string
		form Form
		o    Options
		want string
	}{
		{"static pod", FormPod, with(func(o *Options) { o.InCluster = false }), "static Pod cannot mount"},
		{"bgp", FormDaemonSet, with(func(o *Options) {
			o.ARP, o.BGP, o.RouterID, o.LocalAS, o.Peers = false, true, "10.0.0.1", 65000, "10.0.0.2:65001"
		}), "ARP mode"},
		{"control plane only", FormDaemonSet, with(func(o *Options) { o.Services, o.ControlPlane, o.Address = false, true, "10.1.0.5" }), "ARP mode"},
		{"unknown mode", FormDaemonSet, with(func(o *Options) { o.Liveness = "gossip" }), `--liveness "gossip"`},
		{"secret with lease", FormDaemonSet, with(func(o *Options) { o.Liveness, o.LinkKeySecret = agentconfig.LivenessLease, "k" }), "--link-key-secret needs --liveness=link"},
		{"bad secret name", FormDaemonSet, with(func(o *Options) { o.LinkKeySecret = "My_Key" }), "not a Secret name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Render(tc.form, tc.o)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrInvalid with %q", err, tc.want)
			}
		})
	}
}
