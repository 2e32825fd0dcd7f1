package deploy_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/vip-lb/vip/pkg/testbed"
)

// TestAgentLeaseRights applies deploy/agent/rbac.yaml (RBAC and the
// ValidatingAdmissionPolicy) to a real API server and writes Leases with
// the agent's ServiceAccount token, bound to a Pod on node-a as a
// DaemonSet's projected token is: vip's own Lease names are allowed in the
// agent namespace; other components' Leases (kube-controller-manager,
// kube-scheduler, vip-ccm), kube-node-lease, a tenant namespace and another
// node's heartbeat are refused, each for create, update, patch and delete.
func TestAgentLeaseRights(t *testing.T) {
	env := testbed.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	admin := env.AdminClient()
	if err := env.ApplyFile(ctx, filepath.Join("agent", "rbac.yaml")); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"kube-node-lease", "team-a"} {
		_, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	// A Pod of the agent on node-a, and a token bound to it.
	if _, err := admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod, err := admin.CoreV1().Pods("kube-system").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "vip-agent-x", Namespace: "kube-system"},
		Spec: corev1.PodSpec{ServiceAccountName: "vip-agent", NodeName: "node-a",
			Containers: []corev1.Container{{Name: "vip-agent", Image: "vip-agent"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	exp := int64(3600)
	tr, err := admin.CoreV1().ServiceAccounts("kube-system").CreateToken(ctx, "vip-agent", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp, BoundObjectRef: &authenticationv1.BoundObjectReference{
			Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	agent, err := kubernetes.NewForConfig(env.TokenConfig(tr.Status.Token))
	if err != nil {
		t.Fatal(err)
	}
	// What the API server says the token is: the node name comes from the
	// Pod binding (pod-bound tokens carry it since Kubernetes 1.30).
	rev, err := agent.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node := rev.Status.UserInfo.Extra["authentication.kubernetes.io/node-name"]
	t.Logf("agent token: user %s, node-name %v", rev.Status.UserInfo.Username, node)
	bindsNode := len(node) == 1 && node[0] == "node-a"

	// The Leases of others exist, as in a cluster.
	others := []types.NamespacedName{
		{Namespace: "kube-system", Name: "kube-controller-manager"},
		{Namespace: "kube-system", Name: "kube-scheduler"},
		{Namespace: "kube-system", Name: "vip-ccm"},
		{Namespace: "kube-node-lease", Name: "node-a"},
		{Namespace: "team-a", Name: "vip-addr-10-0-0-1"},
	}
	if bindsNode {
		others = append(others, types.NamespacedName{Namespace: "kube-system", Name: "vip-node-node-b"})
	}
	for _, n := range others {
		if _, err := admin.CoordinationV1().Leases(n.Namespace).Create(ctx, lease(n.Name), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	// The API server loads admission policies asynchronously: wait until
	// this one refuses a dry-run write.
	for {
		_, err := agent.CoordinationV1().Leases("kube-system").Create(ctx, lease("policy-loaded"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if apierrors.IsForbidden(err) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the ValidatingAdmissionPolicy never took effect: last dry run %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	t.Run("vip's own Leases", func(t *testing.T) {
		for _, name := range []string{"vip-node-node-a", "vip-addr-10-0-0-1", "vip-addr-fd00-0000-0000-0000-0000-0000-0000-0001",
			"vip-conflict-10-0-0-9", "vip-dhcp-team-a-web", "plndr-cp-lock"} {
			l := agent.CoordinationV1().Leases("kube-system")
			got, err := l.Create(ctx, lease(name), metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("create %s: %v", name, err)
			}
			holder := "node-a"
			got.Spec.HolderIdentity = &holder
			if _, err = l.Update(ctx, got, metav1.UpdateOptions{}); err != nil {
				t.Fatalf("update %s: %v", name, err)
			}
			if _, err = l.Patch(ctx, name, types.MergePatchType, []byte(`{"metadata":{"annotations":{"vip.io/x":"1"}}}`), metav1.PatchOptions{}); err != nil {
				t.Fatalf("patch %s: %v", name, err)
			}
			if _, err := l.List(ctx, metav1.ListOptions{}); err != nil {
				t.Fatalf("list: %v", err)
			}
			if err := l.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
				t.Fatalf("delete %s: %v", name, err)
			}
		}
	})

	t.Run("everyone else's Leases", func(t *testing.T) {
		forbidden := func(what string, err error) {
			t.Helper()
			if !apierrors.IsForbidden(err) {
				t.Errorf("%s: %v; want Forbidden", what, err)
			}
		}
		for _, n := range others {
			l := agent.CoordinationV1().Leases(n.Namespace)
			cur, err := admin.CoordinationV1().Leases(n.Namespace).Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			holder := "node-a"
			cur.Spec.HolderIdentity = &holder
			_, err = l.Update(ctx, cur, metav1.UpdateOptions{})
			forbidden("update "+n.String(), err)
			_, err = l.Patch(ctx, n.Name, types.MergePatchType, []byte(`{"spec":{"holderIdentity":"node-a"}}`), metav1.PatchOptions{})
			forbidden("patch "+n.String(), err)
			forbidden("delete "+n.String(), l.Delete(ctx, n.Name, metav1.DeleteOptions{}))
			_, err = l.Create(ctx, lease(n.Name+"-new"), metav1.CreateOptions{})
			forbidden("create "+n.Namespace+"/"+n.Name+"-new", err)
			// In kube-system RBAC allows Lease writes: the refusal is
			// the admission policy's, which names itself.
			if n.Namespace == "kube-system" && err != nil && !strings.Contains(err.Error(), "vip-agent-leases") {
				t.Errorf("create in kube-system refused by something else than the policy: %v", err)
			}
			after, err := admin.CoordinationV1().Leases(n.Namespace).Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil || after.Spec.HolderIdentity != nil {
				t.Errorf("%s changed: %v, %+v", n, err, after.Spec)
			}
		}
		// Reading outside the agent namespace is not granted either.
		_, err := agent.CoordinationV1().Leases("kube-node-lease").List(ctx, metav1.ListOptions{})
		forbidden("list kube-node-lease", err)
	})
	if !bindsNode {
		t.Logf("the API server does not put the node name in pod-bound tokens: vip-node-* Leases are not bound to the token's node")
	}
}

func lease(name string) *coordv1.Lease {
	return &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name}}
}
