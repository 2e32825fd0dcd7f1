package manifest

import (
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The shipped install (deploy/, the Helm chart): release and images.
const (
	// Release is the image tag the files under deploy/ name; the Helm
	// chart's appVersion equals it (tested in deploy/).
	Release = "v0.1.0"
	// AgentImage and CCMImage are the programs' image repositories.
	AgentImage = "ghcr.io/vip-lb/vip-agent"
	CCMImage   = "ghcr.io/vip-lb/vip-ccm"
	// shippedNamespace holds every shipped object, as kube-vip's.
	shippedNamespace = DefaultNamespace
)

// shippedAgent is deploy/agent/daemonset.yaml: vip-agent on every node,
// announcing Service addresses by ARP/NDP, configured by flags, with
// /readyz as readiness probe. It differs from the `manifest daemonset`
// form, which writes kube-vip's environment variables for drop-in use.
// The overlays and the Helm chart patch this object; they never repeat it.
func shippedAgent() *appsv1.DaemonSet {
	state, stateMount := stateVolume()
	grace := int64(agentGraceSeconds)
	one := intstr.FromInt32(1)
	probe := func(path string) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: path, Port: intstr.FromInt32(DefaultMetricsPort)}}}
	}
	c := corev1.Container{
		Name:  Name,
		Image: AgentImage + ":" + Release,
		Args:  []string{"--arp"},
		Env: []corev1.EnvVar{
			fieldEnv("NODE_NAME", "spec.nodeName"),
			// Metrics and health listen on the node's address only.
			fieldEnv("NODE_IP", "status.hostIP"),
			{Name: "vip_arp", Value: "true"},
		},
		Ports:           []corev1.ContainerPort{{Name: "metrics", ContainerPort: DefaultMetricsPort}},
		LivenessProbe:   probe("/healthz"),
		ReadinessProbe:  probe("/readyz"),
		Resources:       agentResources(),
		SecurityContext: agentSecurity(),
		VolumeMounts:    []corev1.VolumeMount{stateMount},
	}
	return &appsv1.DaemonSet{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "DaemonSet"},
		ObjectMeta: metav1.ObjectMeta{Name: Name, Namespace: shippedNamespace, Labels: selector()},
		Spec: appsv1.DaemonSetSpec{
			Selector:       &metav1.LabelSelector{MatchLabels: selector()},
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxUnavailable: &one}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: selector()},
				Spec: corev1.PodSpec{
					ServiceAccountName:            Name,
					HostNetwork:                   true,
					DNSPolicy:                     corev1.DNSClusterFirstWithHostNet,
					PriorityClassName:             "system-node-critical",
					TerminationGracePeriodSeconds: &grace,
					SecurityContext:               runtimeDefaultSeccomp(),
					// Every node that may announce needs an agent.
					Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					Containers:  []corev1.Container{c},
					Volumes:     []corev1.Volume{state},
				},
			},
		},
	}
}

// fieldEnv is an environment variable the kubelet fills from the Pod.
func fieldEnv(name, path string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
}

// AgentBGPPatchFile is deploy/overlays/bgp's patch of the shipped
// DaemonSet, relative to the repository root.
const AgentBGPPatchFile = "deploy/overlays/bgp/agent-bgp.yaml"

// BGPConfigMap names the ConfigMap of kube-vip's bgp_* variables the BGP
// overlay and the chart's BGP mode give the agent (envFrom); the passwords
// are in the Secret PasswordSecret, of the same name.
const BGPConfigMap = Name + "-bgp"

// shippedAgentBGPPatch is the strategic merge patch that switches the
// shipped DaemonSet to BGP mode: --bgp instead of --arp, bgp_enable, the
// router ID from the node's address, the bgp_* variables from the
// ConfigMap BGPConfigMap and the passwords Secret mounted where
// --bgp-password-file reads them (the same mount as the `manifest
// daemonset` form's). The kustomize overlay applies it; the Helm chart
// applies the same fields in mode bgp. It is a map, not a typed object:
// only a patch can delete vip_arp.
func shippedAgentBGPPatch() map[string]any {
	spec := corev1.PodSpec{Containers: []corev1.Container{{Name: Name}}}
	mountPasswords(&spec, Options{}, true)
	c := spec.Containers[0]
	routerID := fieldEnv("bgp_routerid", "status.hostIP")
	return agentPatch(map[string]any{
		"name": Name,
		"args": append([]string{"--bgp"}, c.Args...),
		"env": []any{
			map[string]any{"name": "vip_arp", "$patch": "delete"},
			corev1.EnvVar{Name: "bgp_enable", Value: "true"},
			routerID,
		},
		"envFrom":      []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: BGPConfigMap}}}},
		"volumeMounts": c.VolumeMounts,
	}, spec.Volumes)
}

// agentPatch is a strategic merge patch of the shipped DaemonSet: one
// container entry (merged by name) and the Pod's volumes.
func agentPatch(container map[string]any, volumes any) map[string]any {
	return map[string]any{
		"apiVersion": "apps/v1",
		"kind":       "DaemonSet",
		"metadata":   map[string]any{"name": Name, "namespace": shippedNamespace},
		"spec": map[string]any{"template": map[string]any{"spec": map[string]any{
			"containers": []any{container},
			"volumes":    volumes,
		}}},
	}
}

// AgentLinkPatchFile is deploy/overlays/link's patch of the shipped
// DaemonSet, relative to the repository root.
const AgentLinkPatchFile = "deploy/overlays/link/agent-link.yaml"

// shippedAgentLinkPatch is the strategic merge patch that switches the
// shipped DaemonSet's ARP mode to --liveness=link: the flags, and the key
// Secret LinkKeySecret mounted read-only where --link-key-file reads it
// (the same mount as the `manifest daemonset` form's). The Secret itself
// is not shipped (a committed key would be everyone's): the operator
// creates it, or the Helm chart does, with a random key. The arguments
// replace the base's list, so they repeat --arp.
func shippedAgentLinkPatch() map[string]any {
	v, m := linkKeyVolume(LinkKeySecret)
	return agentPatch(map[string]any{
		"name":         Name,
		"args":         append(slices.Clone(shippedAgent().Spec.Template.Spec.Containers[0].Args), linkArgs()...),
		"volumeMounts": []corev1.VolumeMount{m},
	}, []corev1.Volume{v})
}
