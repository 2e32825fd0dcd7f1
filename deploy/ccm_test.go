package deploy_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// TestCCMWithoutCloudNode: with ccm.cloudNodeController=false the chart
// runs vip-ccm without the cloud-node controller and ships the RBAC of
// deploy/ccm/rbac.yaml less system:vip-ccm-cloud-node, so vip-ccm holds no
// right to write Nodes.
func TestCCMWithoutCloudNode(t *testing.T) {
	got := objects(t, render(t, "helm", "deploy/helm/vip", "-f", "deploy/testdata/values-no-cloud-node.yaml"))
	want := shippedRBAC(t)
	for k := range want {
		if strings.HasSuffix(k, "/system:vip-ccm-cloud-node") {
			delete(want, k)
		}
	}
	sameObjects(t, "helm without cloud-node", rbacOf(got), "deploy/*/rbac.yaml less system:vip-ccm-cloud-node", want)
	for k, o := range rbacOf(got) {
		if !strings.Contains(k, "vip-ccm") && !strings.Contains(fmt.Sprint(o), "vip-ccm") {
			continue
		}
		rules, _ := o["rules"].([]any)
		for _, r := range rules {
			rm, _ := r.(map[string]any)
			res, verbs := fmt.Sprint(rm["resources"]), fmt.Sprint(rm["verbs"])
			if strings.Contains(res, "nodes") && (strings.Contains(verbs, "patch") || strings.Contains(verbs, "update")) &&
				strings.Contains(k, "vip-ccm") {
				t.Errorf("%s still grants %s on %s", k, verbs, res)
			}
		}
	}
	dep := got["Deployment kube-system/vip-ccm"]
	if dep == nil {
		t.Fatal("no vip-ccm Deployment")
	}
	var args []string
	for _, a := range dig(t, dep, "spec", "template", "spec", "containers", 0, "args").([]any) {
		args = append(args, fmt.Sprint(a))
	}
	if !slices.Contains(args, "--controllers=*,-cloud-node-controller") {
		t.Errorf("vip-ccm args %v lack --controllers=*,-cloud-node-controller", args)
	}
}
