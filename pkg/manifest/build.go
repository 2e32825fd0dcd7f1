package manifest

import (
	"fmt"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Names used in every form.
const (
	// Name is the name of the Pod, DaemonSet, ServiceAccount and RBAC objects.
	Name = "vip-agent"
	// PoolsConfigMap is the pools ConfigMap the agent reads interfaces from.
	PoolsConfigMap = "kubevip"
	// kubeconfigMount is where the host's kubeconfig appears in the
	// container, whatever host file is mounted (kube-vip's documented
	// super-admin.conf swap edits only the hostPath).
	kubeconfigMount = "/etc/kubernetes/admin.conf"
	stateDir        = "/run/vip-agent"
)

// Objects returns the objects of a manifest, in apply order.
func Objects(form Form, o Options) ([]runtime.Object, error) {
	o, err := o.withDefaults(form)
	if err != nil {
		return nil, err
	}
	var pw map[string]string
	if form != FormPod {
		o.Peers, pw = splitPasswords(o.Peers)
	} else if _, inline := splitPasswords(o.Peers); o.PasswordFile != "" && len(inline) > 0 {
		return nil, fmt.Errorf("%w: passwords in --bgppeers and --bgp-password-file: keep them in the file", ErrInvalid)
	}
	if form == FormPod {
		p := pod(o)
		if o.PasswordFile != "" {
			mountPasswords(&p.Spec, o, false)
		}
		return []runtime.Object{p}, nil
	}
	objs := rbac(o.Namespace, o.LeaseName)
	ds := daemonSet(o)
	if len(pw) > 0 {
		objs = append(objs, passwordSecret(o, pw))
		mountPasswords(&ds.Spec.Template.Spec, o, true)
	}
	if o.linkMode() {
		secret := o.LinkKeySecret
		if secret == "" {
			objs, secret = append(objs, linkKeySecret(o)), LinkKeySecret
		}
		mountLinkKey(&ds.Spec.Template.Spec, secret)
	}
	return append(objs, ds), nil
}

// labels are the labels of every object; selector those of the DaemonSet's
// selector (immutable, so without the version).
func selector() map[string]string { return map[string]string{"app.kubernetes.io/name": Name} }

func labels(o Options) map[string]string {
	l := selector()
	l["app.kubernetes.io/component"] = component(o)
	return l
}

func component(o Options) string {
	switch {
	case o.ControlPlane && o.Services:
		return "control-plane-and-services"
	case o.ControlPlane:
		return "control-plane"
	}
	return "services"
}

func pod(o Options) *corev1.Pod {
	spec := podSpec(o)
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: Name, Namespace: o.Namespace, Labels: labels(o)},
		Spec:       spec,
	}
}

func daemonSet(o Options) *appsv1.DaemonSet {
	spec := podSpec(o)
	spec.ServiceAccountName = Name
	spec.DNSPolicy = corev1.DNSClusterFirstWithHostNet
	// Every node's taints, control-plane ones included, are tolerated: the
	// agent must run wherever it may announce.
	spec.Tolerations = []corev1.Toleration{{Operator: corev1.TolerationOpExists}}
	if o.Taint {
		spec.Affinity = controlPlaneAffinity()
	}
	one := intstr.FromInt32(1)
	return &appsv1.DaemonSet{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "DaemonSet"},
		ObjectMeta: metav1.ObjectMeta{Name: Name, Namespace: o.Namespace, Labels: labels(o)},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: selector()},
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{
				Type:          appsv1.RollingUpdateDaemonSetStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxUnavailable: &one},
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels(o)},
				Spec:       spec,
			},
		},
	}
}

// controlPlaneAffinity selects control-plane nodes (kubeadm and k3s label
// them node-role.kubernetes.io/control-plane).
func controlPlaneAffinity() *corev1.Affinity {
	return &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
		RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
			MatchExpressions: []corev1.NodeSelectorRequirement{
				{Key: "node-role.kubernetes.io/control-plane", Operator: corev1.NodeSelectorOpExists},
			},
		}}},
	}}
}

// podSpec is the part both forms share: host network, two capabilities,
// kube-vip's environment, the state folder and (without in-cluster
// credentials) the kubeconfig.
func podSpec(o Options) corev1.PodSpec {
	hostPathType := func(t corev1.HostPathType) *corev1.HostPathType { return &t }
	state, stateMount := stateVolume()
	c := corev1.Container{
		Name:            Name,
		Image:           o.Image,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Env:             env(o),
		Ports:           []corev1.ContainerPort{{Name: "metrics", ContainerPort: int32(o.MetricsPort), Protocol: corev1.ProtocolTCP}},
		LivenessProbe: &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: "/healthz", Port: intstr.FromInt32(int32(o.MetricsPort)), Scheme: corev1.URISchemeHTTP,
			}},
			PeriodSeconds: 10, FailureThreshold: 3, TimeoutSeconds: 2,
		},
		Resources:       agentResources(),
		SecurityContext: agentSecurity(),
		VolumeMounts:    []corev1.VolumeMount{stateMount},
	}
	volumes := []corev1.Volume{state}
	if !o.InCluster {
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "kubeconfig", MountPath: kubeconfigMount, ReadOnly: true})
		volumes = append(volumes, corev1.Volume{
			Name: "kubeconfig",
			VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{
				Path: o.KubeconfigPath, Type: hostPathType(corev1.HostPathFile),
			}},
		})
	}
	grace := int64(agentGraceSeconds)
	return corev1.PodSpec{
		SecurityContext:               runtimeDefaultSeccomp(),
		HostNetwork:                   true,
		PriorityClassName:             "system-node-critical",
		TerminationGracePeriodSeconds: &grace,
		Containers:                    []corev1.Container{c},
		Volumes:                       volumes,
	}
}

// agentGraceSeconds is the agent Pod's termination grace period: time to
// withdraw its announcements and hand its Leases off.
const agentGraceSeconds = 10

// agentResources are the agent container's requests and limits.
func agentResources() corev1.ResourceRequirements {
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("20m"),
			corev1.ResourceMemory: resource.MustParse("32Mi"),
		},
		Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
	}
}

// agentSecurity lets the agent's container do only what announcing needs:
// NET_ADMIN (bind addresses, routes) and NET_RAW (ARP/NDP), nothing else,
// on a read-only root.
func agentSecurity() *corev1.SecurityContext {
	f, t := false, true
	return &corev1.SecurityContext{
		AllowPrivilegeEscalation: &f,
		ReadOnlyRootFilesystem:   &t,
		Capabilities: &corev1.Capabilities{
			Drop: []corev1.Capability{"ALL"},
			Add:  []corev1.Capability{"NET_ADMIN", "NET_RAW"},
		},
	}
}

// stateVolume is the agent's state folder on the host, and its mount.
func stateVolume() (corev1.Volume, corev1.VolumeMount) {
	t := corev1.HostPathDirectoryOrCreate
	return corev1.Volume{
		Name:         "state",
		VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: stateDir, Type: &t}},
	}, corev1.VolumeMount{Name: "state", MountPath: stateDir}
}

func runtimeDefaultSeccomp() *corev1.PodSecurityContext {
	return &corev1.PodSecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}}
}

// env writes the agent's settings with kube-vip's variable names.
func env(o Options) []corev1.EnvVar {
	var e []corev1.EnvVar
	add := func(name, value string) { e = append(e, corev1.EnvVar{Name: name, Value: value}) }
	add("vip_arp", strconv.FormatBool(o.ARP))
	add("port", strconv.Itoa(o.Port))
	e = append(e, corev1.EnvVar{Name: "vip_nodename", ValueFrom: &corev1.EnvVarSource{
		FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "spec.nodeName"},
	}})
	// Metrics and health listen on the node's address only.
	e = append(e, corev1.EnvVar{Name: "NODE_IP", ValueFrom: &corev1.EnvVarSource{
		FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "status.hostIP"},
	}})
	if o.Interface != "" {
		add("vip_interface", o.Interface)
	}
	if o.ServicesInterface != "" {
		add("vip_servicesinterface", o.ServicesInterface)
	}
	add("cp_enable", strconv.FormatBool(o.ControlPlane))
	add("cp_namespace", o.Namespace)
	add("svc_enable", strconv.FormatBool(o.Services))
	// ARP mode always elects; in BGP mode the flag decides whether only the
	// Lease holder advertises the control-plane VIP.
	add("vip_leaderelection", strconv.FormatBool(o.ARP || o.LeaderElection))
	if o.ControlPlane {
		if o.DDNS {
			add("vip_ddns", "true")
		}
		add("vip_leasename", o.LeaseName)
		for _, d := range []struct {
			name string
			v    time.Duration
		}{{"vip_leaseduration", o.LeaseDuration}, {"vip_renewdeadline", o.RenewDeadline}, {"vip_retryperiod", o.RetryPeriod}} {
			if d.v > 0 {
				add(d.name, formatDuration(d.v))
			}
		}
		if o.LocalAPIServer != "" {
			add("kubernetes_addr", o.LocalAPIServer)
		}
	}
	if o.BGP {
		peerAS := ""
		if o.PeerAddress != "" {
			peerAS = uintOrEmpty(o.PeerAS)
		}
		add("bgp_enable", "true")
		for _, kv := range [][2]string{
			{"bgp_routerid", o.RouterID}, {"bgp_routerinterface", o.RouterInterface},
			{"bgp_as", uintOrEmpty(o.LocalAS)}, {"bgp_peeraddress", o.PeerAddress},
			{"bgp_peeras", peerAS}, {"bgp_peers", o.Peers}, {"annotation", o.Annotations},
			{"bgp_sourceip", o.SourceIP}, {"bgp_sourceif", o.SourceIF},
			{"bgp_hold_time", intOrEmpty(o.HoldTime)}, {"bgp_keepalive_interval", intOrEmpty(o.Keepalive)},
		} {
			if kv[1] != "" {
				add(kv[0], kv[1])
			}
		}
	}
	if o.Address != "" {
		add("address", o.Address)
	}
	if o.Services && o.LBClassName != "" {
		add("lb_class_name", o.LBClassName)
	}
	if o.Services && o.LBClassOnly {
		add("lb_class_only", "true")
	}
	add("prometheus_server", ":"+strconv.Itoa(o.MetricsPort))
	if o.HealthCheckPort != 0 {
		add("health_check_port", strconv.Itoa(o.HealthCheckPort))
	}
	if !o.InCluster {
		add("k8s_config_file", kubeconfigMount)
	}
	return e
}

// formatDuration writes whole seconds as kube-vip does ("5") and anything
// finer as a Go duration ("1.5s"); the agent reads both.
func formatDuration(d time.Duration) string {
	if d%time.Second == 0 {
		return strconv.FormatInt(int64(d/time.Second), 10)
	}
	return d.String()
}

func intOrEmpty(v int) string {
	if v == 0 {
		return ""
	}
	return strconv.Itoa(v)
}

func uintOrEmpty(v uint32) string {
	if v == 0 {
		return ""
	}
	return strconv.FormatUint(uint64(v), 10)
}
