package manifest

import (
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// vip-ccm's shipped names.
const (
	// CCMName names vip-ccm's Deployment, ServiceAccount and leader Lease.
	CCMName = "vip-ccm"
	// CCMCloudNodeRole names the ClusterRole and binding of the cloud-node
	// controller: the only rights to write Nodes. The Helm chart leaves
	// them out with ccm.cloudNodeController=false.
	CCMCloudNodeRole = "system:vip-ccm-cloud-node"
	ccmSecurePort    = 10258
	ccmUser          = 65532 // nonroot of distroless images
)

func ccmLabels() map[string]string {
	return map[string]string{"app.kubernetes.io/name": CCMName, "app.kubernetes.io/part-of": "vip"}
}

// shippedCCM is deploy/ccm/deployment.yaml: two leader-elected replicas in
// kube-system, non-root, preferring control-plane nodes and spreading
// over hosts.
func shippedCCM() *appsv1.Deployment {
	f, t := false, true
	replicas, history := int32(2), int32(3)
	one, zero := intstr.FromInt32(1), intstr.FromInt32(0)
	user := int64(ccmUser)
	// /healthz: the process and its leader election work (liveness);
	// /readyz: it leads with its controllers running on synced informers,
	// or is a standby that reads the leader Lease (readiness).
	probe := func(path string, initialDelay, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: path, Port: intstr.FromString("https"), Scheme: corev1.URISchemeHTTPS}},
			InitialDelaySeconds: initialDelay, PeriodSeconds: 10, TimeoutSeconds: 5, FailureThreshold: failures,
		}
	}
	c := corev1.Container{
		Name:            CCMName,
		Image:           CCMImage + ":" + Release,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Args:            []string{"--leader-elect=true", "--secure-port=10258", "--v=2"},
		Ports:           []corev1.ContainerPort{{Name: "https", ContainerPort: ccmSecurePort, Protocol: corev1.ProtocolTCP}},
		LivenessProbe:   probe("/healthz", 15, 3),
		ReadinessProbe:  probe("/readyz", 0, 0),
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")},
		},
		SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: &f,
			ReadOnlyRootFilesystem:   &t,
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
		VolumeMounts: []corev1.VolumeMount{{Name: "tmp", MountPath: "/tmp"}},
	}
	tmpSize := resource.MustParse("16Mi")
	controlPlane := corev1.NodeSelectorRequirement{Key: "node-role.kubernetes.io/control-plane", Operator: corev1.NodeSelectorOpExists}
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: CCMName, Namespace: shippedNamespace, Labels: ccmLabels()},
		Spec: appsv1.DeploymentSpec{
			Replicas:             &replicas,
			RevisionHistoryLimit: &history,
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{MaxUnavailable: &one, MaxSurge: &zero}},
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/name": CCMName}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: ccmLabels()},
				Spec: corev1.PodSpec{
					ServiceAccountName:           CCMName,
					AutomountServiceAccountToken: &t,
					PriorityClassName:            "system-cluster-critical",
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot: &t, RunAsUser: &user, RunAsGroup: &user,
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					// A cloud-controller-manager must run before nodes are
					// initialised, and usually on control-plane nodes.
					Tolerations: []corev1.Toleration{
						{Key: "node.cloudprovider.kubernetes.io/uninitialized", Value: "true", Effect: corev1.TaintEffectNoSchedule},
						{Key: "node-role.kubernetes.io/control-plane", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
						{Key: "node.kubernetes.io/not-ready", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
					},
					Affinity: &corev1.Affinity{
						NodeAffinity: &corev1.NodeAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []corev1.PreferredSchedulingTerm{{
							Weight: 50, Preference: corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{controlPlane}},
						}}},
						PodAntiAffinity: &corev1.PodAntiAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
							Weight: 100, PodAffinityTerm: corev1.PodAffinityTerm{
								TopologyKey:   "kubernetes.io/hostname",
								LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/name": CCMName}},
							},
						}}},
					},
					Containers: []corev1.Container{c},
					Volumes: []corev1.Volume{{Name: "tmp", VolumeSource: corev1.VolumeSource{
						EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory, SizeLimit: &tmpSize}}}},
				},
			},
		},
	}
}

// ccmRBAC is deploy/ccm/rbac.yaml: vip-ccm's ServiceAccount and exactly the
// rights its controllers use (the integration tests run vip-ccm with a
// token of this ServiceAccount, so a missing rule fails a test).
func ccmRBAC() []runtime.Object {
	ns := shippedNamespace
	meta := func(name string, namespaced bool) metav1.ObjectMeta {
		m := metav1.ObjectMeta{Name: name, Labels: ccmLabels()}
		if namespaced {
			m.Namespace = ns
		}
		return m
	}
	subject := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: CCMName, Namespace: ns}}
	rule := func(group, resource string, verbs ...string) rbacv1.PolicyRule {
		return rbacv1.PolicyRule{APIGroups: []string{group}, Resources: []string{resource}, Verbs: verbs}
	}
	clusterRole := func(name string, rules ...rbacv1.PolicyRule) []runtime.Object {
		return []runtime.Object{
			&rbacv1.ClusterRole{TypeMeta: typeMeta("ClusterRole"), ObjectMeta: meta(name, false), Rules: rules},
			&rbacv1.ClusterRoleBinding{TypeMeta: typeMeta("ClusterRoleBinding"), ObjectMeta: meta(name, false),
				RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name}, Subjects: subject},
		}
	}
	role := func(name string, rules ...rbacv1.PolicyRule) []runtime.Object {
		return []runtime.Object{
			&rbacv1.Role{TypeMeta: typeMeta("Role"), ObjectMeta: meta(name, true), Rules: rules},
			&rbacv1.RoleBinding{TypeMeta: typeMeta("RoleBinding"), ObjectMeta: meta(name, true),
				RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name}, Subjects: subject},
		}
	}
	pools := rule("", "configmaps", "get", "list", "watch")
	pools.ResourceNames = []string{PoolsConfigMap}
	leader := rule("coordination.k8s.io", "leases", "get", "update")
	leader.ResourceNames = []string{CCMName}

	objs := []runtime.Object{&corev1.ServiceAccount{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"}, ObjectMeta: meta(CCMName, true)}}
	objs = append(objs, clusterRole("system:"+CCMName,
		// The service controller: watch Services; add and remove the
		// load-balancer-cleanup finalizer and write status.loadBalancer,
		// both by patches of the status subresource (as the stock
		// controller did), so no write on the Service itself.
		rule("", "services", "list", "watch"),
		rule("", "services/status", "patch"),
		// The service controller's node informer (Node addresses and pod
		// CIDRs are never assignable); writes are in CCMCloudNodeRole.
		rule("", "nodes", "list", "watch"),
		// Service CIDRs are never assignable.
		rule("networking.k8s.io", "servicecidrs", "list", "watch"),
		// Events on Services, Nodes, the pools ConfigMap and the leader Lease.
		rule("", "events", "create", "patch", "update"),
		// Delegated authentication and authorization of /metrics, /healthz.
		rule("authentication.k8s.io", "tokenreviews", "create"),
		rule("authorization.k8s.io", "subjectaccessreviews", "create"),
	)...)
	// Cloud-node controller: initialise Nodes (providerID, the
	// uninitialized taint, addresses, labels); get for the label helper.
	objs = append(objs, clusterRole(CCMCloudNodeRole,
		rule("", "nodes", "get", "patch", "update"),
		rule("", "nodes/status", "patch", "update"),
	)...)
	// vip-agent's Leases, read only, in the agent namespace only:
	// heartbeats, the control-plane lock, conflict and DHCP records.
	objs = append(objs, role(CCMName+"-agent-leases", rule("coordination.k8s.io", "leases", "list", "watch"))...)
	// Leader election: create cannot be limited by name; get and update can.
	objs = append(objs, role(CCMName+"-leader-election", rule("coordination.k8s.io", "leases", "create"), leader)...)
	// The pools ConfigMap: read-only, this one object in this namespace.
	return append(objs, role(CCMName+"-pools", pools)...)
}

func typeMeta(kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: kind}
}
