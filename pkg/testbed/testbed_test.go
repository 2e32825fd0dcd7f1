package testbed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// rbacYAML grants ServiceAccount demo/reader read access to ConfigMaps in
// namespace demo, and nothing else.
const rbacYAML = `
apiVersion: v1
kind: ServiceAccount
metadata:
  name: reader
  namespace: demo
---
# comment-only and empty documents are skipped
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: cm-reader
  namespace: demo
rules:
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: cm-reader
  namespace: demo
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: cm-reader
subjects:
- kind: ServiceAccount
  name: reader
  namespace: demo
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: kubevip
  namespace: demo
data:
  cidr-global: 10.77.0.200/29
---
apiVersion: v1
kind: Namespace
metadata:
  name: demo
`

// TestEnv starts one Env and checks admin access, dual-stack Services,
// ApplyYAML, ServiceAccount tokens under RBAC, kubeconfig files and an API
// server restart.
func TestEnv(t *testing.T) {
	t.Parallel()
	env := Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cs := env.AdminClient()

	t.Run("namespace", func(t *testing.T) {
		_, err := cs.CoreV1().Namespaces().Create(ctx,
			&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ns1"}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("dual-stack service", func(t *testing.T) {
		pol := corev1.IPFamilyPolicyRequireDualStack
		svc, err := cs.CoreV1().Services("default").Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "ds"},
			Spec: corev1.ServiceSpec{
				Type:           corev1.ServiceTypeLoadBalancer,
				IPFamilyPolicy: &pol,
				Ports:          []corev1.ServicePort{{Port: 80}},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(svc.Spec.ClusterIPs) != 2 {
			t.Fatalf("clusterIPs = %v, want one IPv4 and one IPv6", svc.Spec.ClusterIPs)
		}
	})

	t.Run("apply and RBAC", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "rbac.yaml")
		if err := os.WriteFile(path, []byte(rbacYAML), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := env.ApplyFile(ctx, path); err != nil {
			t.Fatal(err)
		}
		if err := env.ApplyFile(ctx, path); err != nil { // applying twice is fine
			t.Fatalf("second apply: %v", err)
		}
		tok, err := env.ServiceAccountToken(ctx, "demo", "reader")
		if err != nil {
			t.Fatal(err)
		}
		sa, err := kubernetes.NewForConfig(env.TokenConfig(tok))
		if err != nil {
			t.Fatal(err)
		}
		cm, err := sa.CoreV1().ConfigMaps("demo").Get(ctx, "kubevip", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("granted read: %v", err)
		}
		if cm.Data["cidr-global"] != "10.77.0.200/29" {
			t.Errorf("configmap data = %v", cm.Data)
		}
		_, err = sa.CoreV1().Secrets("demo").List(ctx, metav1.ListOptions{})
		if !apierrors.IsForbidden(err) {
			t.Errorf("list secrets: err = %v, want Forbidden", err)
		}
		_, err = sa.CoreV1().ConfigMaps("default").List(ctx, metav1.ListOptions{})
		if !apierrors.IsForbidden(err) {
			t.Errorf("list configmaps in another namespace: err = %v, want Forbidden", err)
		}
		// A ServiceAccount created on the fly has no rights at all.
		tok2, err := env.ServiceAccountToken(ctx, "other", "nobody")
		if err != nil {
			t.Fatal(err)
		}
		nobody := kubernetes.NewForConfigOrDie(env.TokenConfig(tok2))
		if _, err := nobody.CoreV1().ConfigMaps("demo").Get(ctx, "kubevip", metav1.GetOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("get without grant: err = %v, want Forbidden", err)
		}
	})

	t.Run("kubeconfig", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "kubeconfig")
		if err := env.Kubeconfig(path, ""); err != nil {
			t.Fatal(err)
		}
		cfg, err := clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kubernetes.NewForConfigOrDie(cfg).CoreV1().Namespaces().Get(ctx, "kube-system", metav1.GetOptions{}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("restart", func(t *testing.T) {
		if err := env.StopAPIServer(); err != nil {
			t.Fatal(err)
		}
		short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
		_, err := cs.CoreV1().Namespaces().Get(short, "ns1", metav1.GetOptions{})
		cancelShort()
		if err == nil {
			t.Fatal("API server still answers after StopAPIServer")
		}
		t0 := time.Now()
		if err := env.StartAPIServer(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("restart took %v", time.Since(t0).Round(time.Millisecond))
		if _, err := cs.CoreV1().Namespaces().Get(ctx, "ns1", metav1.GetOptions{}); err != nil {
			t.Fatalf("data after restart: %v", err)
		}
		if err := env.StartAPIServer(ctx); err == nil {
			t.Error("second StartAPIServer should fail while running")
		}
	})
}

// TestNetns runs the servers inside a network namespace created by the test,
// bound to a 10.x address on a dummy interface there.
func TestNetns(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip command")
	}
	ns := fmt.Sprintf("tb%d", os.Getpid())
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	run("netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	run("-n", ns, "link", "set", "lo", "up")
	run("-n", ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
	run("-n", ns, "addr", "add", "10.250.0.1/24", "dev", "v0")
	run("-n", ns, "link", "set", "v0", "up")
	run("-n", ns, "link", "set", "v1", "up")

	// Registered after the netns cleanup, so it runs first: servers die
	// before the namespace goes.
	env := Start(t, WithNetns(ns), WithAddress("10.250.0.1"), WithServiceCIDRs("10.96.0.0/12"))
	if got, want := env.Server()[:len("https://10.250.0.1:")], "https://10.250.0.1:"; got != want {
		t.Errorf("Server() = %s", env.Server())
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := env.AdminClient().CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestMissingBinaries checks the error type that makes Start skip or fail.
func TestMissingBinaries(t *testing.T) {
	_, err := StartProcess(context.Background(), Options{BinDir: t.TempDir()})
	var mb *MissingBinaryError
	if !errors.As(err, &mb) {
		t.Fatalf("err = %v, want *MissingBinaryError", err)
	}
}

// fakeTB records Skipf and Fatalf and stops Start by panicking.
type fakeTB struct {
	testing.TB
	skipped, failed string
}

func (f *fakeTB) Helper()                   {}
func (f *fakeTB) Logf(string, ...any)       {}
func (f *fakeTB) Skipf(s string, a ...any)  { f.skipped = fmt.Sprintf(s, a...); panic(f) }
func (f *fakeTB) Fatalf(s string, a ...any) { f.failed = fmt.Sprintf(s, a...); panic(f) }

// TestStartWithoutBinaries checks that Start skips, or fails when
// VIP_REQUIRE_APISERVER=1, if the binaries are missing.
func TestStartWithoutBinaries(t *testing.T) {
	for _, require := range []string{"", "1"} {
		t.Setenv(EnvRequireAPIServer, require)
		f := &fakeTB{TB: t}
		func() {
			defer func() { _ = recover() }()
			Start(f, WithBinDir(t.TempDir()))
		}()
		got := f.skipped
		if require == "1" {
			got = f.failed
		}
		if !strings.Contains(got, "make bin/kube-apiserver bin/etcd") {
			t.Errorf("require=%q: skipped=%q failed=%q", require, f.skipped, f.failed)
		}
	}
}

// TestDecodeObjects checks splitting of multi-document YAML without a server.
func TestDecodeObjects(t *testing.T) {
	objs, err := decodeObjects([]byte(rbacYAML + "\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: a}\n"))
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, o := range objs {
		kinds = append(kinds, o.GetKind())
	}
	want := []string{"ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Namespace", "ConfigMap"}
	if fmt.Sprint(kinds) != fmt.Sprint(want) {
		t.Errorf("kinds = %v, want %v", kinds, want)
	}
	if _, err := decodeObjects([]byte("kind: ConfigMap\n")); err == nil {
		t.Error("object without apiVersion and name accepted")
	}
}
