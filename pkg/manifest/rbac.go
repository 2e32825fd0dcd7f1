package manifest

import (
	"fmt"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// LeasePolicyName names the ValidatingAdmissionPolicy and its binding that
// confine the agent's Lease writes.
const LeasePolicyName = Name + "-leases"

// rbac returns the agent's ServiceAccount and its least-privilege rules,
// the same as deploy/agent/rbac.yaml: read-only on Services, EndpointSlices
// and Nodes; Events; in its own namespace only the pools ConfigMap and
// Leases, narrowed by a ValidatingAdmissionPolicy to vip's Lease names
// (leaseName is the control-plane lock).
func rbac(ns, leaseName string) []runtime.Object {
	read := []string{"get", "list", "watch"}
	meta := func(name string, namespaced bool) metav1.ObjectMeta {
		m := metav1.ObjectMeta{Name: name, Labels: selector()}
		if namespaced {
			m.Namespace = ns
		}
		return m
	}
	subject := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: Name, Namespace: ns}}
	return []runtime.Object{
		&corev1.ServiceAccount{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
			ObjectMeta: meta(Name, true),
		},
		&rbacv1.ClusterRole{
			TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole"},
			ObjectMeta: meta(Name, false),
			Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"services", "nodes"}, Verbs: read},
				{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: read},
				{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
			},
		},
		&rbacv1.ClusterRoleBinding{
			TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRoleBinding"},
			ObjectMeta: meta(Name, false),
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: Name},
			Subjects:   subject,
		},
		&rbacv1.Role{
			TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "Role"},
			ObjectMeta: meta(Name+"-pools", true),
			Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{PoolsConfigMap}, Verbs: read},
				{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"},
					Verbs: []string{"get", "list", "watch", "create", "update", "patch", "delete"}},
			},
		},
		&rbacv1.RoleBinding{
			TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "RoleBinding"},
			ObjectMeta: meta(Name+"-pools", true),
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: Name + "-pools"},
			Subjects:   subject,
		},
		leasePolicy(ns, leaseName, meta(LeasePolicyName, false)),
		&admissionv1.ValidatingAdmissionPolicyBinding{
			TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "ValidatingAdmissionPolicyBinding"},
			ObjectMeta: meta(LeasePolicyName, false),
			Spec: admissionv1.ValidatingAdmissionPolicyBindingSpec{
				PolicyName:        LeasePolicyName,
				ValidationActions: []admissionv1.ValidationAction{admissionv1.Deny},
			},
		},
	}
}

// leasePolicy lets the agent's ServiceAccount create, update and delete
// only vip's Leases in its namespace: vip-node-<its own node> (when the
// token names the node, as pod-bound tokens do), vip-addr-*, vip-conflict-*,
// vip-dhcp-* and the control-plane lock.
func leasePolicy(ns, leaseName string, m metav1.ObjectMeta) *admissionv1.ValidatingAdmissionPolicy {
	fail := admissionv1.Fail
	const nodeKey = `"authentication.kubernetes.io/node-name"`
	return &admissionv1.ValidatingAdmissionPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "ValidatingAdmissionPolicy"},
		ObjectMeta: m,
		Spec: admissionv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: &fail,
			MatchConstraints: &admissionv1.MatchResources{
				ResourceRules: []admissionv1.NamedRuleWithOperations{{
					RuleWithOperations: admissionv1.RuleWithOperations{
						Operations: []admissionv1.OperationType{admissionv1.Create, admissionv1.Update, admissionv1.Delete},
						Rule: admissionv1.Rule{APIGroups: []string{"coordination.k8s.io"}, APIVersions: []string{"*"},
							Resources: []string{"leases"}},
					},
				}},
			},
			MatchConditions: []admissionv1.MatchCondition{{
				Name:       Name,
				Expression: fmt.Sprintf("request.userInfo.username == %q", "system:serviceaccount:"+ns+":"+Name),
			}},
			Variables: []admissionv1.Variable{{
				Name: "nodeName",
				Expression: nodeKey + " in request.userInfo.extra && " +
					"size(request.userInfo.extra[" + nodeKey + "]) > 0 ? " +
					"request.userInfo.extra[" + nodeKey + "][0] : \"\"",
			}},
			Validations: []admissionv1.Validation{
				{
					Expression:        fmt.Sprintf("request.namespace == %q", ns),
					MessageExpression: fmt.Sprintf(`%q + request.namespace`, Name+" may write Leases only in "+ns+", not in "),
					Reason:            reasonForbidden(),
				},
				{
					Expression: "request.name.startsWith(\"vip-addr-\") || request.name.startsWith(\"vip-conflict-\") || " +
						"request.name.startsWith(\"vip-dhcp-\") || request.name == " + fmt.Sprintf("%q", leaseName) + " || " +
						"(request.name.startsWith(\"vip-node-\") && (variables.nodeName == \"\" || request.name == \"vip-node-\" + variables.nodeName))",
					MessageExpression: fmt.Sprintf(`%q + request.namespace + "/" + request.name + %q`, Name+" may not write Lease ",
						": only vip-node-<its node>, vip-addr-*, vip-conflict-*, vip-dhcp-* and "+leaseName),
					Reason: reasonForbidden(),
				},
			},
		},
	}
}

func reasonForbidden() *metav1.StatusReason {
	r := metav1.StatusReasonForbidden
	return &r
}
