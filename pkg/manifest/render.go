package manifest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/vip-lb/vip/pkg/agentconfig"
)

// Render builds the manifest of form and writes it as YAML, one document per
// object, after a comment saying where it goes.
func Render(form Form, o Options) ([]byte, error) {
	objs, err := Objects(form, o)
	if err != nil {
		return nil, err
	}
	o, _ = o.withDefaults(form) // validated by Objects
	body, err := Marshal(objs)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	for _, line := range header(form, o) {
		b.WriteString(strings.TrimRight("# "+line, " ") + "\n")
	}
	b.Write(body)
	return b.Bytes(), nil
}

// Marshal writes objects as multi-document YAML, without the status and
// null creationTimestamp fields that typed objects carry.
func Marshal(objs []runtime.Object) ([]byte, error) {
	var b bytes.Buffer
	for i, obj := range objs {
		j, err := json.Marshal(obj)
		if err != nil {
			return nil, fmt.Errorf("encoding object %d: %w", i, err)
		}
		var m map[string]any
		if err := json.Unmarshal(j, &m); err != nil {
			return nil, fmt.Errorf("encoding object %d: %w", i, err)
		}
		delete(m, "status") // a manifest describes, it never reports
		prune(m)
		y, err := yaml.Marshal(m)
		if err != nil {
			return nil, fmt.Errorf("encoding object %d: %w", i, err)
		}
		if i > 0 {
			b.WriteString("---\n")
		}
		b.Write(y)
	}
	return b.Bytes(), nil
}

// prune drops the null creationTimestamp fields of object metadata.
func prune(m map[string]any) {
	for k, v := range m {
		switch v := v.(type) {
		case map[string]any:
			if ts, ok := v["creationTimestamp"]; ok && k == "metadata" && ts == nil {
				delete(v, "creationTimestamp")
			}
			prune(v)
		case []any:
			for _, e := range v {
				if em, ok := e.(map[string]any); ok {
					prune(em)
				}
			}
		}
	}
}

// header says where the manifest goes and how to use it.
func header(form Form, o Options) []string {
	what := component(o)
	switch form {
	case FormPod:
		h := []string{
			"vip-agent static Pod (" + what + "), image " + o.Image + ".",
			"Save it as /etc/kubernetes/manifests/vip-agent.yaml on every control-plane node,",
			"before `kubeadm init` / `kubeadm join --control-plane` on that node.",
		}
		if o.KubeconfigPath == DefaultKubeconfigPath {
			h = append(h, "",
				"kubeadm 1.29+: while `kubeadm init` runs on the FIRST control-plane node, admin.conf has no",
				"rights yet and only "+SuperAdminKubeconfig+" works. On that node generate with",
				"--kubeconfig-path "+SuperAdminKubeconfig+", or edit the saved file:",
				"  sed -i 's#path: "+DefaultKubeconfigPath+"#path: "+SuperAdminKubeconfig+"#' /etc/kubernetes/manifests/vip-agent.yaml",
				"(other control-plane nodes, and kubeadm before 1.29, keep admin.conf).")
		}
		if o.KubeconfigPath == SuperAdminKubeconfig {
			h = append(h, "",
				"super-admin.conf (group system:masters) bypasses RBAC and cannot be revoked: once `kubeadm init`",
				"has finished, switch this node back to admin.conf (the kubelet restarts the Pod):",
				"  sed -i 's#path: "+SuperAdminKubeconfig+"#path: "+DefaultKubeconfigPath+"#' /etc/kubernetes/manifests/vip-agent.yaml")
		}
		return h
	case FormK3s:
		return append([]string{
			"vip-agent DaemonSet and RBAC for k3s (" + what + "), image " + o.Image + ".",
			"Save it as /var/lib/rancher/k3s/server/manifests/vip-agent.yaml on a server node;",
			"k3s applies it. Add the control-plane address to the API certificate: k3s server --tls-san ADDRESS.",
		}, linkHeader(o)...)
	}
	return append([]string{
		"vip-agent DaemonSet with its ServiceAccount and RBAC (" + what + "), image " + o.Image + ".",
		"Apply it with kubectl apply -f.",
	}, linkHeader(o)...)
}

// linkHeader explains a link-mode DaemonSet's key.
func linkHeader(o Options) []string {
	if !o.linkMode() {
		return nil
	}
	h := []string{"",
		"Liveness: --liveness=link (docs/liveness.md): heartbeats on UDP port " + strconv.Itoa(agentconfig.Default().Liveness.Port) + " between the nodes,",
		"which must reach each other there on the announcing interface."}
	if o.LinkKeySecret != "" {
		return append(h, "The heartbeat key is read from the Secret "+o.LinkKeySecret+" (item \""+LinkKeyItem+"\"), which must exist.")
	}
	return append(h,
		"The Secret "+LinkKeySecret+" holds a heartbeat key drawn at random for this file: keep it secret.",
		"Every agent must hold the same key, and an agent reads it when it starts: applying another",
		"rendering replaces the key, and agents with different keys judge each other dead. Keep this",
		"file, or generate again with --link-key-secret="+LinkKeySecret+" to keep the Secret's key.",
		"Two-node clusters: use --liveness=lease (docs/liveness.md, Limits).")
}

// RenderRBAC writes the agent's ServiceAccount and RBAC (what `vip-agent
// manifest daemonset` applies before the DaemonSet, and deploy/agent/rbac.yaml
// ships) for the namespace and control-plane Lease name ("" = defaults).
func RenderRBAC(namespace, leaseName string) ([]byte, error) {
	if namespace == "" {
		namespace = DefaultNamespace
	}
	if leaseName == "" {
		leaseName = DefaultLeaseName
	}
	body, err := Marshal(rbac(namespace, leaseName))
	if err != nil {
		return nil, err
	}
	return append([]byte("# vip-agent ServiceAccount and RBAC; apply with kubectl apply -f (vip-ccm's is deploy/ccm/rbac.yaml).\n"), body...), nil
}
