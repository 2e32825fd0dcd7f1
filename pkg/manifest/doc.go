// Package manifest builds the Kubernetes objects that run vip-agent on a
// cluster: the kubeadm static Pod (/etc/kubernetes/manifests), the DaemonSet
// with its ServiceAccount and RBAC, and the k3s variant
// (/var/lib/rancher/k3s/server/manifests); and the shipped install files
// under deploy/: both programs' workloads and RBAC (DeployFiles, written by
// `make manifests`; the kustomize overlays patch them and the Helm chart
// reads them, docs/install.md). Objects are typed (k8s.io/api)
// and rendered with sigs.k8s.io/yaml; the agent's settings are written as
// kube-vip's environment variables, so the result reads like the manifests
// kube-vip users already have.
//
// The package knows the agent's configuration surface (flag and environment
// names) but nothing about how the agent works, and it never reads the
// environment, the network or a cluster.
package manifest
