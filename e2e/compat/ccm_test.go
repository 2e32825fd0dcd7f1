//go:build e2e

package compat

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// cloudProviderRBAC is kube-vip-cloud-provider's own ServiceAccount and
// RBAC (manifest/kube-vip-cloud-controller.yaml, which the blog and the
// on-prem docs apply).
const cloudProviderRBAC = `apiVersion: v1
kind: ServiceAccount
metadata:
  name: kube-vip-cloud-controller
  namespace: kube-system
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  annotations:
    rbac.authorization.kubernetes.io/autoupdate: "true"
  name: system:kube-vip-cloud-controller-role
rules:
  - apiGroups: ["coordination.k8s.io"]
    resources: ["leases"]
    verbs: ["get", "create", "update", "list", "put"]
  - apiGroups: [""]
    resources: ["configmaps", "endpoints","events","services/status", "leases"]
    verbs: ["*"]
  - apiGroups: [""]
    resources: ["nodes", "services"]
    verbs: ["list","get","watch","update"]
---
kind: ClusterRoleBinding
apiVersion: rbac.authorization.k8s.io/v1
metadata:
  name: system:kube-vip-cloud-controller-binding
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:kube-vip-cloud-controller-role
subjects:
- kind: ServiceAccount
  name: kube-vip-cloud-controller
  namespace: kube-system
`

// cloudProviderCommand is the Deployment's container command, word for word.
var cloudProviderCommand = []string{"/kube-vip-cloud-provider", "--leader-elect-resource-name=kube-vip-cloud-controller"}

// imageTree lays out the runtime image of a Dockerfile without a Docker
// engine, as e2e/images does: the build stage's output folder holds the
// binary (built as out) and what the stage's `RUN ln -s` lines make; the
// runtime stage's `COPY --from=build SRC DST` of that folder is applied to
// a root folder, which is returned.
func imageTree(t *testing.T, dockerfile, out, bin string) string {
	t.Helper()
	buildfs, rootfs := t.TempDir(), t.TempDir()
	link := func(target, name string) error {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(buildfs, name)), 0o755); err != nil {
			return err
		}
		return os.Symlink(target, filepath.Join(buildfs, name))
	}
	if err := os.MkdirAll(filepath.Dir(filepath.Join(buildfs, out)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(bin, filepath.Join(buildfs, out)); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	copied := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		w := strings.Fields(sc.Text())
		switch {
		case len(w) == 5 && w[0] == "RUN" && w[1] == "ln" && w[2] == "-s":
			if err := link(w[3], w[4]); err != nil {
				t.Fatalf("%s: %v", sc.Text(), err)
			}
		case len(w) == 4 && w[0] == "COPY" && w[1] == "--from=build":
			src, dst := filepath.Join(buildfs, w[2]), filepath.Join(rootfs, w[3])
			ents, err := os.ReadDir(src)
			if err != nil || !strings.HasSuffix(w[2], "/") {
				t.Fatalf("%s: only folder copies are modelled (%v)", sc.Text(), err)
			}
			for _, e := range ents {
				target, err := os.Readlink(filepath.Join(src, e.Name()))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.MkdirAll(dst, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(target, filepath.Join(dst, e.Name())); err != nil {
					t.Fatal(err)
				}
				copied++
			}
		}
	}
	if copied == 0 {
		t.Fatalf("%s: nothing copied into the runtime image", dockerfile)
	}
	return rootfs
}

// resolveIn follows p inside root as the kernel would inside the container
// (absolute links stay in root; the build binary itself is the one link
// leaving it) and returns the host path.
func resolveIn(root, p, bin string) (string, error) {
	for range 40 {
		host := filepath.Join(root, p)
		target, err := os.Readlink(host)
		if err != nil {
			return "", fmt.Errorf("%s is not in the image: %w", p, err)
		}
		if target == bin {
			return bin, nil
		}
		if !path.IsAbs(target) {
			target = path.Join(path.Dir(p), target)
		}
		p = target
	}
	return "", fmt.Errorf("%s: too many symbolic links", p)
}

// TestCloudProviderDeployment: kube-vip-cloud-provider's Deployment with
// only the image swapped: its ServiceAccount and RBAC, its command
// /kube-vip-cloud-provider resolved inside vip-ccm's image tree, its
// argument, and the blog's global range ConfigMap (addresses swapped for
// lab ones). A Service gets an address of that range and answers from the
// client namespace. That RBAC lacks servicecidrs (and watch on leases):
// vip-ccm names each missing rule once, with the file that grants it, and
// serves without them at once.
func TestCloudProviderDeployment(t *testing.T) {
	ctx, l := newLab(t)
	if err := l.CCM.Stop(syscall.SIGTERM, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(l.Opts.BinDir, "vip-ccm")
	root := imageTree(t, filepath.Join(l.Opts.RepoDir, "Dockerfile.ccm"), "/out/vip-ccm", bin)
	exe, err := resolveIn(root, cloudProviderCommand[0], bin)
	if err != nil {
		t.Fatal(err)
	}
	// The blog's ConfigMap: range-global: 192.168.0.33-192.168.0.62.
	lo, hi := netip.MustParseAddr(fmt.Sprintf("10.%d.0.33", l.X)), netip.MustParseAddr(fmt.Sprintf("10.%d.0.62", l.X))
	cm, err := l.Admin.CoreV1().ConfigMaps("kube-system").Get(ctx, "kubevip", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data = map[string]string{"range-global": lo.String() + "-" + hi.String()}
	if _, err := l.Admin.CoreV1().ConfigMaps("kube-system").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	kc := kubeconfigFor(t, ctx, l, cloudProviderRBAC, "kube-vip-cloud-controller")
	// --kubeconfig stands in for the in-cluster token mount, --secure-port=0
	// keeps the lab's host ports free; the rest is the Deployment's.
	args := append(append([]string{}, cloudProviderCommand[1:]...), "--kubeconfig", kc, "--secure-port=0")
	p, err := l.StartProc("kube-vip-cloud-provider", l.API, "kube-vip-cloud-provider.log", exe, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(p.Tail(60))
		}
		_ = p.Stop(syscall.SIGTERM, 20*time.Second)
	})
	addr := newService(t, ctx, l, "default", "hello")
	if a := addr; a.Compare(lo) < 0 || a.Compare(hi) > 0 {
		t.Fatalf("address %s is outside the ConfigMap's range-global %s-%s", a, lo, hi)
	}
	node := answeringNode(t, ctx, l, addr)
	// That RBAC grants no servicecidrs: vip-ccm says so in one line naming
	// the file that grants it, then serves without them.
	if _, err := waitLog(ctx, p.Log, "ServiceCIDR objects could not be listed", "deploy/ccm/rbac.yaml"); err != nil {
		t.Error(err)
	}
	// Nor watch on Leases: one line too, not client-go's error on every
	// retry of the Lease informer.
	log, err := waitLog(ctx, p.Log, "Leases of the agent namespace could not be read", "deploy/ccm/rbac.yaml")
	if err != nil {
		t.Error(err)
	}
	n := 0
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, `resource \"leases\"`) || strings.Contains(line, `resource "leases"`) {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d log lines about the forbidden Leases, want 1:\n%s", n, log)
	}
	t.Logf("%s (from range-global) answers from %s; vip-ccm ran as %s -> %s", addr, node, cloudProviderCommand[0], exe)
}
