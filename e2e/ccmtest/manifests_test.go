package ccmtest

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"

	"github.com/vip-lb/vip/pkg/ipam"
)

func readDeploy(t *testing.T, name string) []byte {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "deploy", "ccm", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDeployManifests checks the shipped files without an API server: the
// example pools parse cleanly, and the Deployment runs two leader-elected,
// non-root replicas on a read-only root filesystem.
func TestDeployManifests(t *testing.T) {
	var cm v1.ConfigMap
	if err := yaml.UnmarshalStrict(readDeploy(t, "configmap-example.yaml"), &cm); err != nil {
		t.Fatal(err)
	}
	if cm.Name != PoolsName || cm.Namespace != PoolsNamespace {
		t.Errorf("example ConfigMap is %s/%s", cm.Namespace, cm.Name)
	}
	cfg, errs := ipam.ParseConfig(cm.Data)
	if len(errs) > 0 {
		t.Errorf("example pools do not parse: %v", errs)
	}
	for _, k := range []string{"cidr-global", "range-global", "allow-share-development", "skip-end-ips-in-cidr"} {
		if _, ok := cm.Data[k]; !ok {
			t.Errorf("example lacks %s", k)
		}
	}
	if !cfg.Shareable("development") || cfg.Shareable("production") || !cfg.SkipEndIPsInCIDR() {
		t.Error("example settings not as documented")
	}

	var d appsv1.Deployment
	if err := yaml.UnmarshalStrict(readDeploy(t, "deployment.yaml"), &d); err != nil {
		t.Fatal(err)
	}
	ps := d.Spec.Template.Spec
	c := ps.Containers[0]
	switch {
	case d.Namespace != "kube-system" || *d.Spec.Replicas != 2:
		t.Errorf("deployment %s replicas %d", d.Namespace, *d.Spec.Replicas)
	case ps.ServiceAccountName != "vip-ccm":
		t.Errorf("service account %q", ps.ServiceAccountName)
	case ps.SecurityContext == nil || ps.SecurityContext.RunAsNonRoot == nil || !*ps.SecurityContext.RunAsNonRoot:
		t.Error("pod may run as root")
	case c.SecurityContext == nil || !*c.SecurityContext.ReadOnlyRootFilesystem || *c.SecurityContext.AllowPrivilegeEscalation:
		t.Error("container root filesystem writable or privilege escalation allowed")
	case !strings.HasPrefix(c.Image, "ghcr.io/vip-lb/vip-ccm:"):
		t.Errorf("image %q", c.Image)
	case !slices.Contains(c.Args, "--leader-elect=true"):
		t.Errorf("leader election not on: %v", c.Args)
	case c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero():
		t.Error("resources not set")
	}
	if !slices.ContainsFunc(ps.Tolerations, func(x v1.Toleration) bool { return x.Key == taintUninitialized }) {
		t.Error("the CCM must tolerate the uninitialized taint it removes")
	}
}

// TestRBACIsLeastPrivilege checks that the shipped RBAC grants nothing
// broader than vip-ccm needs: no wildcards, no Secrets, ConfigMaps only by
// name in kube-system, Leases only in kube-system, Node writes only in the
// cloud-node ClusterRole (left out when running without that controller).
func TestRBACIsLeastPrivilege(t *testing.T) {
	docs := strings.Split(string(readDeploy(t, "rbac.yaml")), "\n---")
	kinds := map[string]int{}
	for _, doc := range docs {
		var meta struct {
			Kind string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil || meta.Kind == "" {
			continue
		}
		kinds[meta.Kind]++
		var rules []rbacv1.PolicyRule
		var ns, clusterRole string
		switch meta.Kind {
		case "ClusterRole":
			var r rbacv1.ClusterRole
			if err := yaml.UnmarshalStrict([]byte(doc), &r); err != nil {
				t.Fatal(err)
			}
			rules, clusterRole = r.Rules, r.Name
		case "Role":
			var r rbacv1.Role
			if err := yaml.UnmarshalStrict([]byte(doc), &r); err != nil {
				t.Fatal(err)
			}
			rules, ns = r.Rules, r.Namespace
		}
		for _, r := range rules {
			for _, s := range append(append(append([]string{}, r.Verbs...), r.Resources...), r.APIGroups...) {
				if s == "*" {
					t.Errorf("wildcard in %s rule %+v", meta.Kind, r)
				}
			}
			for _, res := range r.Resources {
				switch res {
				case "secrets", "pods", "serviceaccounts", "endpoints":
					t.Errorf("%s grants %s", meta.Kind, res)
				case "configmaps":
					if meta.Kind != "Role" || ns != "kube-system" || len(r.ResourceNames) != 1 || slices.ContainsFunc(r.Verbs, func(v string) bool { return v != "get" && v != "list" && v != "watch" }) {
						t.Errorf("configmaps rule too broad: %s/%s %+v", meta.Kind, ns, r)
					}
				case "leases":
					// Only in kube-system (the agent namespace and the
					// leader-election Lease), never cluster-wide.
					if meta.Kind != "Role" || ns != "kube-system" {
						t.Errorf("leases granted beyond kube-system: %s %+v", meta.Kind, r)
					}
				case "nodes", "nodes/status":
					writes := slices.ContainsFunc(r.Verbs, func(v string) bool { return v != "get" && v != "list" && v != "watch" })
					if writes && clusterRole != "system:vip-ccm-cloud-node" {
						t.Errorf("node writes outside system:vip-ccm-cloud-node: %s %+v", clusterRole, r)
					}
				}
			}
		}
	}
	if kinds["ServiceAccount"] != 1 || kinds["ClusterRole"] != 2 || kinds["Role"] != 3 {
		t.Errorf("objects: %v", kinds)
	}
}
