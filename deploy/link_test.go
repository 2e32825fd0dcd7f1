package deploy_test

import (
	"context"
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vip-lb/vip/pkg/manifest"
	"github.com/vip-lb/vip/pkg/testbed"
)

// linkKeySecret is the key of the chart's heartbeat key Secret in objects'
// maps.
const linkKeySecret = "Secret kube-system/" + manifest.LinkKeySecret

// linkKey returns the heartbeat key the Secret of a rendering holds, after
// checking it is LinkKeyBytes random bytes written in base64 ("" without
// the Secret).
func linkKey(t *testing.T, m map[string]object) string {
	t.Helper()
	s := m[linkKeySecret]
	if s == nil {
		return ""
	}
	data, _ := s["data"].(map[string]any)
	if len(data) != 1 {
		t.Fatalf("%s: data %v, want the one item %q", linkKeySecret, keysOf(data), manifest.LinkKeyItem)
	}
	file, err := base64.StdEncoding.DecodeString(data[manifest.LinkKeyItem].(string))
	if err != nil {
		t.Fatalf("%s: %v", linkKeySecret, err)
	}
	raw, err := base64.StdEncoding.DecodeString(string(file))
	if err != nil || len(raw) != manifest.LinkKeyBytes {
		t.Fatalf("%s: the key file holds %d bytes (%v), want %d random bytes in base64", linkKeySecret, len(raw), err, manifest.LinkKeyBytes)
	}
	return string(file)
}

func keysOf(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// maskLinkKey checks the key of a rendering's Secret and replaces it by a
// placeholder, so two renderings (each drawing its own key) compare.
func maskLinkKey(t *testing.T, m map[string]object) {
	t.Helper()
	if linkKey(t, m) != "" {
		m[linkKeySecret]["data"] = map[string]any{manifest.LinkKeyItem: "<random>"}
	}
}

// TestHelmLinkKey: default values install --liveness=link with the Secret
// vip-link-key mounted for --link-key-file, holding a key drawn at each
// fresh rendering; liveness lease, mode bgp and agent.linkKeySecret render
// no Secret (the last mounts the named one). That `helm upgrade` keeps the
// installed key (lookup) needs a cluster: TestHelmUpgradeKeepsLinkKey.
func TestHelmLinkKey(t *testing.T) {
	a := objects(t, render(t, "helm", "deploy/helm/vip"))
	b := objects(t, render(t, "helm", "deploy/helm/vip", "--set", "agent.logFormat=json"))
	ka, kb := linkKey(t, a), linkKey(t, b)
	if ka == "" || kb == "" {
		t.Fatalf("default values render no %s", linkKeySecret)
	}
	if ka == kb {
		t.Error("two fresh renderings hold the same key")
	}
	if got := linkSecretOf(t, a); got != manifest.LinkKeySecret {
		t.Errorf("the DaemonSet mounts Secret %q for --link-key-file, want %q", got, manifest.LinkKeySecret)
	}
	for _, set := range []string{"agent.liveness=lease", "mode=bgp", "agent.linkKeySecret=my-key"} {
		m := objects(t, render(t, "helm", "deploy/helm/vip", "--set", set))
		if _, ok := m[linkKeySecret]; ok {
			t.Errorf("--set %s renders %s", set, linkKeySecret)
		}
		want := map[string]string{"agent.liveness=lease": "", "mode=bgp": "", "agent.linkKeySecret=my-key": "my-key"}[set]
		if got := linkSecretOf(t, m); got != want {
			t.Errorf("--set %s: the DaemonSet mounts key Secret %q, want %q", set, got, want)
		}
	}
	_, stderr, err := tryRender(t, "helm", "deploy/helm/vip", "--set", "agent.liveness=gossip")
	if err == nil || !strings.Contains(stderr, "liveness") {
		t.Errorf("agent.liveness=gossip: err %v, stderr %q; want an error naming liveness", err, stderr)
	}
}

// linkSecretOf is the Secret a rendering's DaemonSet mounts for
// --link-key-file ("" when not in link mode), after checking the flags.
func linkSecretOf(t *testing.T, m map[string]object) string {
	t.Helper()
	ds := m["DaemonSet kube-system/vip-agent"]
	c := dig(t, ds, "spec", "template", "spec", "containers", 0).(map[string]any)
	var args []string
	for _, a := range c["args"].([]any) {
		args = append(args, a.(string))
	}
	link := strings.Contains(strings.Join(args, " "), "--liveness=link")
	mount := ""
	for _, v := range c["volumeMounts"].([]any) {
		if vm := v.(map[string]any); vm["name"] == "link-key" {
			mount = vm["mountPath"].(string)
			if vm["readOnly"] != true {
				t.Errorf("key mount %v is not read-only", vm)
			}
		}
	}
	secret := ""
	for _, v := range dig(t, ds, "spec", "template", "spec", "volumes").([]any) {
		if vm := v.(map[string]any); vm["name"] == "link-key" {
			secret = dig(t, vm, "secret", "secretName").(string)
		}
	}
	if link != (secret != "") || link != (mount != "") ||
		(link && !strings.Contains(strings.Join(args, " "), "--link-key-file="+mount+"/"+manifest.LinkKeyItem)) {
		t.Errorf("args %v, key mount %q, Secret %q: want all or none", args, mount, secret)
	}
	return secret
}

// keyLike is what a generated key looks like in a file: 32 bytes or more
// in base64, as a value of a key named like one.
var keyLike = regexp.MustCompile(`(?i)(key|secret|password)["']?\s*[:=]\s*["']?[A-Za-z0-9+/]{40,}={0,2}`)

// TestDeployHoldsNoLinkKey: no file under deploy/ carries a heartbeat key
// (the Secret is created at install, by the operator or the chart): the
// overlay and the chart mount the Secret, and nothing ships its data.
func TestDeployHoldsNoLinkKey(t *testing.T) {
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(path, ".go") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if loc := keyLike.FindIndex(b); loc != nil {
			t.Errorf("%s holds what looks like a key: %.20q…", path, b[loc[0]:loc[1]])
		}
		if strings.Contains(string(b), "kind: Secret") && strings.Contains(string(b), manifest.LinkKeySecret) &&
			!strings.Contains(string(b), "randBytes") {
			t.Errorf("%s defines the Secret %s without drawing its key", path, manifest.LinkKeySecret)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestHelmUpgradeKeepsLinkKey installs the chart with the helm command
// into a real kube-apiserver (objects only: no kubelet runs them), then
// upgrades it: the key Secret keeps its key (the chart's lookup), as every
// running agent holds it; switching to liveness lease removes the Secret
// and the mount, and back to link draws a new key.
func TestHelmUpgradeKeepsLinkKey(t *testing.T) {
	helm := helmCLI(t)
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver")
	}
	env := testbed.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := env.Kubeconfig(kubeconfig, ""); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) {
		t.Helper()
		cmd := exec.CommandContext(ctx, helm, append(args, "--kubeconfig", kubeconfig, "--namespace", "kube-system")...)
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+filepath.Join(dir, "cache"),
			"HELM_CONFIG_HOME="+filepath.Join(dir, "config"), "HELM_DATA_HOME="+filepath.Join(dir, "data"))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	cs := env.AdminClient()
	key := func() string {
		t.Helper()
		s, err := cs.CoreV1().Secrets("kube-system").Get(ctx, manifest.LinkKeySecret, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return ""
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(s.Data[manifest.LinkKeyItem])
	}
	mounted := func() bool {
		t.Helper()
		ds, err := cs.AppsV1().DaemonSets("kube-system").Get(ctx, "vip-agent", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range ds.Spec.Template.Spec.Volumes {
			if v.Secret != nil && v.Secret.SecretName == manifest.LinkKeySecret {
				return true
			}
		}
		return false
	}

	run("install", "vip", "deploy/helm/vip")
	first := key()
	if raw, err := base64.StdEncoding.DecodeString(first); err != nil || len(raw) != manifest.LinkKeyBytes || !mounted() {
		t.Fatalf("after install: key of %d bytes (%v), mounted %v; want %d random bytes, mounted", len(raw), err, mounted(), manifest.LinkKeyBytes)
	}
	run("upgrade", "vip", "deploy/helm/vip", "--set", "agent.logFormat=json")
	if got := key(); got != first || !mounted() {
		t.Fatalf("helm upgrade changed the key (same: %v) or dropped its mount (mounted: %v)", got == first, mounted())
	}
	run("upgrade", "vip", "deploy/helm/vip", "--set", "agent.liveness=lease")
	if got := key(); got != "" || mounted() {
		t.Fatalf("liveness lease: Secret left %v, mounted %v", got != "", mounted())
	}
	run("upgrade", "vip", "deploy/helm/vip", "--reset-values")
	if got := key(); got == "" || got == first || !mounted() {
		t.Fatalf("back to link: a new key %v (same as the first: %v), mounted %v", got != "", got == first, mounted())
	}
}
