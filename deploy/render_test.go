package deploy_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/util/diff"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/vip-lb/vip/pkg/bgpconfig"
	"github.com/vip-lb/vip/pkg/ipam"
	"github.com/vip-lb/vip/pkg/manifest"
)

// repoRoot is the repository, one level up from this package.
const repoRoot = ".."

var (
	buildOnce sync.Once
	renderBin string
	buildErr  error
)

// renderer builds hack/render (kustomize and Helm from their Go libraries,
// pinned in that build module) once per test binary.
func renderer(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "vip-render-")
		if err != nil {
			buildErr = err
			return
		}
		renderBin = filepath.Join(dir, "vip-render")
		cmd := exec.Command("go", "build", "-o", renderBin, ".")
		cmd.Dir = filepath.Join(repoRoot, "hack", "render")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("building hack/render: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return renderBin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if renderBin != "" {
		os.RemoveAll(filepath.Dir(renderBin))
	}
	if progDir != "" {
		os.RemoveAll(progDir)
	}
	os.Exit(code)
}

var (
	cacheMu sync.Mutex
	cache   = map[string][]byte{}
)

// render runs vip-render with args from the repository root (once per
// distinct command line and test binary).
func render(t *testing.T, args ...string) []byte {
	t.Helper()
	k := strings.Join(args, "\x00")
	cacheMu.Lock()
	out, ok := cache[k]
	cacheMu.Unlock()
	if ok {
		return out
	}
	out, stderr, err := tryRender(t, args...)
	if err != nil {
		t.Fatalf("vip-render %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	cacheMu.Lock()
	cache[k] = out
	cacheMu.Unlock()
	return out
}

func tryRender(t *testing.T, args ...string) (stdout []byte, stderr string, err error) {
	t.Helper()
	cmd := exec.Command(renderer(t), args...)
	cmd.Dir = repoRoot
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.Bytes(), e.String(), err
}

// object is one decoded manifest.
type object = map[string]any

// objects decodes a YAML stream into objects keyed "Kind namespace/name".
func objects(t *testing.T, data []byte) map[string]object {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	out := map[string]object{}
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("YAML document %d: %v", i, err)
		}
		var o object
		if err := yaml.Unmarshal(doc, &o); err != nil {
			t.Fatalf("YAML document %d: %v\n%s", i, err, doc)
		}
		if len(o) == 0 {
			continue
		}
		k := key(o)
		if _, dup := out[k]; dup {
			t.Fatalf("%s appears twice", k)
		}
		out[k] = o
	}
}

func key(o object) string {
	md, _ := o["metadata"].(map[string]any)
	return fmt.Sprintf("%v %v/%v", o["kind"], md["namespace"], md["name"])
}

func keys(m map[string]object) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// normalize sorts lists of named items (env, volumes, volumeMounts, ports,
// containers) by name: kustomize's patches reorder them, Kubernetes does not
// care. Everything else must match exactly.
func normalize(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = normalize(e)
		}
	case []any:
		named := len(x) > 0
		for i, e := range x {
			x[i] = normalize(e)
			m, ok := e.(map[string]any)
			if _, hasName := m["name"].(string); !ok || !hasName {
				named = false
			}
		}
		if named {
			sort.SliceStable(x, func(i, j int) bool {
				return x[i].(map[string]any)["name"].(string) < x[j].(map[string]any)["name"].(string)
			})
		}
	}
	return v
}

// sameObjects fails unless got and want hold the same objects.
func sameObjects(t *testing.T, gotName string, got map[string]object, wantName string, want map[string]object) {
	t.Helper()
	for _, k := range keys(want) {
		g, ok := got[k]
		if !ok {
			t.Errorf("%s lacks %s (in %s)", gotName, k, wantName)
			continue
		}
		if w := normalize(want[k]); !reflect.DeepEqual(normalize(g), w) {
			t.Errorf("%s differs between %s and %s (-%s +%s):\n%s", k, wantName, gotName, wantName, gotName, diff.Diff(w, g))
		}
	}
	for _, k := range keys(got) {
		if _, ok := want[k]; !ok {
			t.Errorf("%s has %s, %s does not", gotName, k, wantName)
		}
	}
}

// rbacKinds are the kinds that make up the programs' permissions.
var rbacKinds = map[string]bool{"ServiceAccount": true, "ClusterRole": true, "ClusterRoleBinding": true, "Role": true, "RoleBinding": true,
	"ValidatingAdmissionPolicy": true, "ValidatingAdmissionPolicyBinding": true}

func rbacOf(m map[string]object) map[string]object {
	out := map[string]object{}
	for k, o := range m {
		if rbacKinds[fmt.Sprint(o["kind"])] {
			out[k] = o
		}
	}
	return out
}

// shippedRBAC is deploy/ccm/rbac.yaml plus deploy/agent/rbac.yaml: what the
// e2e tests run vip-ccm and vip-agent with.
func shippedRBAC(t *testing.T) map[string]object {
	t.Helper()
	out := map[string]object{}
	for _, f := range []string{"ccm/rbac.yaml", "agent/rbac.yaml"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for k, o := range objects(t, b) {
			out[k] = o
		}
	}
	if len(out) < 8 {
		t.Fatalf("deploy/*/rbac.yaml: only %d objects", len(out))
	}
	return out
}

// renderings are every supported way to install vip, by name.
func renderings(t *testing.T) map[string][]byte {
	t.Helper()
	return map[string][]byte{
		"kustomize base":          render(t, "kustomize", "deploy/base"),
		"kustomize overlays/arp":  render(t, "kustomize", "deploy/overlays/arp"),
		"kustomize overlays/bgp":  render(t, "kustomize", "deploy/overlays/bgp"),
		"kustomize overlays/link": render(t, "kustomize", "deploy/overlays/link"),
		"helm liveness lease":     render(t, "helm", "deploy/helm/vip", "--set", "agent.liveness=lease"),
		"helm defaults":           render(t, "helm", "deploy/helm/vip"),
		"helm custom":             render(t, "helm", "deploy/helm/vip", "-f", "deploy/testdata/values-custom.yaml"),
	}
}

func TestRBACIsTheShippedRBAC(t *testing.T) {
	want := shippedRBAC(t)
	for name, data := range renderings(t) {
		t.Run(name, func(t *testing.T) {
			sameObjects(t, name, rbacOf(objects(t, data)), "deploy/*/rbac.yaml", want)
		})
	}
}

func TestKustomizeBase(t *testing.T) {
	got := objects(t, render(t, "kustomize", "deploy/base"))
	want := map[string]object{}
	for _, f := range []string{"ccm/rbac.yaml", "ccm/configmap-example.yaml", "ccm/deployment.yaml", "agent/rbac.yaml", "agent/daemonset.yaml"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for k, o := range objects(t, b) {
			want[k] = o
		}
	}
	sameObjects(t, "kustomize base", got, "deploy/{ccm,agent}/*.yaml", want)
}

// TestHelmDefaultsEqualKustomize holds the chart to the kustomize sources:
// default values render the link overlay (and the key Secret), liveness
// lease the base, mode bgp the BGP overlay, an interface (with liveness
// lease) the ARP overlay.
func TestHelmDefaultsEqualKustomize(t *testing.T) {
	for _, tc := range []struct {
		name      string
		helmArgs  []string
		kustomize string
	}{
		{"defaults", nil, "deploy/overlays/link"},
		{"liveness lease", []string{"--set", "agent.liveness=lease"}, "deploy/base"},
		{"arp with interface", []string{"--set", "agent.interface=eth0", "--set", "agent.liveness=lease"}, "deploy/overlays/arp"},
		{"bgp", []string{"--set", "mode=bgp"}, "deploy/overlays/bgp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := objects(t, render(t, append([]string{"helm", "deploy/helm/vip"}, tc.helmArgs...)...))
			// The chart creates the key Secret the overlay leaves to the
			// operator (TestHelmLinkKey checks it).
			delete(h, linkKeySecret)
			k := objects(t, render(t, "kustomize", tc.kustomize))
			sameObjects(t, "helm "+strings.Join(tc.helmArgs, " "), h, "kustomize "+tc.kustomize, k)
		})
	}
}

// dig returns the value at a path of map keys and list indexes.
func dig(t *testing.T, o any, path ...any) any {
	t.Helper()
	cur := o
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := cur.(map[string]any)
			if !ok {
				t.Fatalf("%v: %v is not a map", path, cur)
			}
			cur = m[k]
		case int:
			l, ok := cur.([]any)
			if !ok || k >= len(l) {
				t.Fatalf("%v: %v has no item %d", path, cur, k)
			}
			cur = l[k]
		}
	}
	return cur
}

func envValue(t *testing.T, ds object, name string) (string, bool) {
	t.Helper()
	for _, e := range dig(t, ds, "spec", "template", "spec", "containers", 0, "env").([]any) {
		if m := e.(map[string]any); m["name"] == name {
			v, _ := m["value"].(string)
			return v, true
		}
	}
	return "", false
}

func TestHelmCustomValues(t *testing.T) {
	m := objects(t, render(t, "helm", "deploy/helm/vip", "-f", "deploy/testdata/values-custom.yaml"))
	ds := m["DaemonSet kube-system/vip-agent"]
	dep := m["Deployment kube-system/vip-ccm"]
	if ds == nil || dep == nil {
		t.Fatalf("missing workloads; have %v", keys(m))
	}
	pod := dig(t, ds, "spec", "template", "spec")
	if got := dig(t, pod, "priorityClassName"); got != "vip-node-critical" {
		t.Errorf("agent priorityClassName = %v", got)
	}
	wantTol := []any{map[string]any{"key": "dedicated", "operator": "Equal", "value": "lb", "effect": "NoSchedule"}}
	if got := dig(t, pod, "tolerations"); !reflect.DeepEqual(got, wantTol) {
		t.Errorf("agent tolerations = %v, want %v", got, wantTol)
	}
	if got := dig(t, dep, "spec", "template", "spec", "priorityClassName"); got != "vip-cluster-critical" {
		t.Errorf("ccm priorityClassName = %v", got)
	}
	args := fmt.Sprint(dig(t, pod, "containers", 0, "args"))
	for _, want := range []string{"--bgp", "--bgp-password-file=/etc/vip-agent/bgp", "--heartbeat-period=1s", "--heartbeat-timeout=4s", "--logging-format=json", "--metrics-address=:9112", "--lb-class-only"} {
		if !strings.Contains(args, want) {
			t.Errorf("agent args %s lack %s", args, want)
		}
	}
	if strings.Contains(args, "--arp") {
		t.Errorf("agent args %s: --arp in bgp mode", args)
	}
	if _, ok := envValue(t, ds, "vip_arp"); ok {
		t.Error("vip_arp set in bgp mode")
	}
	if v, _ := envValue(t, ds, "vip_interface"); v != "bond0" {
		t.Errorf("vip_interface = %q", v)
	}
	if got := dig(t, pod, "containers", 0, "image"); got != "registry.example/vip-agent:v9.9.9" {
		t.Errorf("agent image = %v", got)
	}
	if got := dig(t, pod, "containers", 0, "livenessProbe", "httpGet", "port"); fmt.Sprint(got) != "9112" {
		t.Errorf("agent liveness port = %v", got)
	}
	ccmArgs := fmt.Sprint(dig(t, dep, "spec", "template", "spec", "containers", 0, "args"))
	for _, want := range []string{"--control-plane-address=192.168.0.40,192.168.0.41", "--load-balancer-class=kube-vip.io/kube-vip-class", "--load-balancer-class-only", "--logging-format=json"} {
		if !strings.Contains(ccmArgs, want) {
			t.Errorf("ccm args %s lack %s", ccmArgs, want)
		}
	}
	if got := dig(t, dep, "spec", "replicas"); fmt.Sprint(got) != "3" {
		t.Errorf("ccm replicas = %v", got)
	}
	bgp := m["ConfigMap kube-system/vip-agent-bgp"]
	if got := dig(t, bgp, "data", "bgp_peers"); got != "10.0.0.1:64512::false,[fd00:10::1]:64512::true:1179" {
		t.Errorf("bgp_peers = %v", got)
	}
	if got := dig(t, bgp, "data", "bgp_as"); got != "64513" {
		t.Errorf("bgp_as = %v", got)
	}
	sec := m["Secret kube-system/vip-agent-bgp"]
	if got := dig(t, sec, "data", "10.0.0.1"); got != "czNjcmV0" { // base64("s3cret")
		t.Errorf("password of 10.0.0.1 = %v", got)
	}
	pools := m["ConfigMap kube-system/kubevip"]
	if got := dig(t, pools, "data"); !reflect.DeepEqual(got, map[string]any{"cidr-global": "10.20.0.0/28", "allow-share-global": "true", "allow-static-outside-pools": "false"}) {
		t.Errorf("pools = %v", got)
	}
	sm := m["ServiceMonitor kube-system/vip"]
	if sm == nil {
		t.Fatalf("serviceMonitor.enabled rendered no ServiceMonitor; have %v", keys(m))
	}
	if got := dig(t, sm, "metadata", "labels", "release"); got != "prometheus" {
		t.Errorf("ServiceMonitor labels = %v", dig(t, sm, "metadata", "labels"))
	}
	if m["Service kube-system/vip-agent-metrics"] == nil || m["Service kube-system/vip-ccm-metrics"] == nil {
		t.Errorf("metrics Services missing; have %v", keys(m))
	}
}

func TestHelmServiceMonitorOffByDefault(t *testing.T) {
	for k := range objects(t, render(t, "helm", "deploy/helm/vip")) {
		if strings.HasPrefix(k, "ServiceMonitor ") || strings.HasPrefix(k, "Service ") {
			t.Errorf("default values render %s", k)
		}
	}
}

// TestHelmRejectsBadValues: values the programs would refuse stop the
// rendering with a message naming the value.
func TestHelmRejectsBadValues(t *testing.T) {
	for _, tc := range []struct {
		set, want string
	}{
		{"mode=l3", "mode"},
		{"mode=bgp,bgp.peers=null", "mode bgp needs at least one entry in bgp.peers"},
		{"ccm.loadBalancerClassOnly=true", "ccm.loadBalancerClassOnly needs ccm.loadBalancerClass"},
		// values.schema.json: types, ranges, typos.
		{"agent.metricsPort=0", "metricsPort"},
		{"agent.heartbeatPeriod=fast", "heartbeatPeriod"},
		{"agent.logFormat=xml", "logFormat"},
		{"agnet.interface=eth0", "agnet"},
		{"bgp.peers[0].address=10.0.0.1,bgp.peers[0].as=0", "as"},
	} {
		_, stderr, err := tryRender(t, "helm", "deploy/helm/vip", "--set", tc.set)
		if err == nil || !strings.Contains(stderr, tc.want) {
			t.Errorf("--set %s: err %v, stderr %q; want an error with %q", tc.set, err, stderr, tc.want)
		}
	}
}

// TestVersionOneSource: the chart's appVersion is the image tag of the
// manifests, and the default tag of the chart's images follows it.
func TestVersionOneSource(t *testing.T) {
	b, err := os.ReadFile("helm/vip/Chart.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var chart struct {
		Version    string `json:"version"`
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(b, &chart); err != nil {
		t.Fatal(err)
	}
	if "v"+chart.Version != chart.AppVersion {
		t.Errorf("Chart.yaml version %s and appVersion %s are not one release", chart.Version, chart.AppVersion)
	}
	if manifest.Release != chart.AppVersion {
		t.Errorf("pkg/manifest Release %s (the tag of the rendered deploy/ files) is not Chart.yaml appVersion %s", manifest.Release, chart.AppVersion)
	}
	base := objects(t, render(t, "kustomize", "deploy/base"))
	for k, prog := range map[string]string{"Deployment kube-system/vip-ccm": "vip-ccm", "DaemonSet kube-system/vip-agent": "vip-agent"} {
		want := "ghcr.io/vip-lb/" + prog + ":" + chart.AppVersion
		if got := dig(t, base[k], "spec", "template", "spec", "containers", 0, "image"); got != want {
			t.Errorf("%s image %v, want %s (Chart.yaml appVersion)", k, got, want)
		}
	}
	h := objects(t, render(t, "helm", "deploy/helm/vip", "--version", "1.2.3", "--app-version", "v1.2.3"))
	if got := dig(t, h["DaemonSet kube-system/vip-agent"], "spec", "template", "spec", "containers", 0, "image"); got != "ghcr.io/vip-lb/vip-agent:v1.2.3" {
		t.Errorf("--app-version v1.2.3: agent image %v", got)
	}
}

// TestHelmPackage: `make chart` packages the chart with the build's version,
// and the package holds the linked deploy/ files themselves.
func TestHelmPackage(t *testing.T) {
	dir := t.TempDir()
	out := strings.TrimSpace(string(render(t, "package", "deploy/helm/vip", dir, "v1.2.3-rc.1")))
	if filepath.Base(out) != "vip-1.2.3-rc.1.tgz" {
		t.Fatalf("packaged as %s", out)
	}
	got := objects(t, render(t, "helm", out))
	img := dig(t, got["Deployment kube-system/vip-ccm"], "spec", "template", "spec", "containers", 0, "image")
	if img != "ghcr.io/vip-lb/vip-ccm:v1.2.3-rc.1" {
		t.Errorf("packaged chart's vip-ccm image %v", img)
	}
	sameObjects(t, "packaged chart", rbacOf(got), "deploy/*/rbac.yaml", shippedRBAC(t))
	// Every linked file is in the package: in BGP mode (the rendered patch
	// too) it renders what the chart folder does for the same release.
	sameObjects(t, "packaged chart, mode bgp", objects(t, render(t, "helm", out, "--set", "mode=bgp")),
		"deploy/helm/vip, mode bgp", objects(t, render(t, "helm", "deploy/helm/vip", "--set", "mode=bgp", "--app-version", "v1.2.3-rc.1")))
	if _, stderr, err := tryRender(t, "package", "deploy/helm/vip", dir, "not-a-version"); err == nil {
		t.Error("version not-a-version was accepted")
	} else if !strings.Contains(stderr, "not-a-version") {
		t.Errorf("bad version: %s", stderr)
	}
}

// TestRenderedSettingsParse: the pools and BGP peers every rendering ships
// are accepted by the parsers vip-ccm and vip-agent use.
func TestRenderedSettingsParse(t *testing.T) {
	for name, data := range renderings(t) {
		m := objects(t, data)
		pools := m["ConfigMap kube-system/kubevip"]
		if pools == nil {
			t.Errorf("%s: no pools ConfigMap", name)
			continue
		}
		cm := map[string]string{}
		for k, v := range dig(t, pools, "data").(map[string]any) {
			s, ok := v.(string)
			if !ok {
				t.Errorf("%s: pools key %s is %T, not a string", name, k, v)
			}
			cm[k] = s
		}
		if _, errs := ipam.ParseConfig(cm); len(errs) > 0 {
			t.Errorf("%s: pools do not parse: %v", name, errs)
		}
		if bgp := m["ConfigMap kube-system/vip-agent-bgp"]; bgp != nil {
			s, _ := dig(t, bgp, "data", "bgp_peers").(string)
			peers, err := bgpconfig.ParsePeers(s)
			if err != nil || len(peers) == 0 {
				t.Errorf("%s: bgp_peers %q: %d peers, %v", name, s, len(peers), err)
			}
		}
	}
}
