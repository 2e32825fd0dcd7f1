package agentconfig

import (
	"fmt"
	"os"

	"github.com/go-logr/logr"
)

// kubeadmKubeconfig is the kubeconfig kube-vip falls back to when it is
// given none: kubeadm's admin.conf, which kube-vip's static Pod mounts.
const kubeadmKubeconfig = "/etc/kubernetes/admin.conf"

// inClusterToken is the ServiceAccount token of in-cluster credentials.
const inClusterToken = "/var/run/secrets/kubernetes.io/serviceaccount/token" // #nosec G101 -- a path, not a credential

// CredentialSource says where the agent's API credentials come from.
type CredentialSource string

const (
	credExplicit  CredentialSource = "kubeconfig" // --kubeconfig, --k8sConfigPath, KUBECONFIG, k8s_config_file
	credInCluster CredentialSource = "in-cluster" // the Pod's ServiceAccount
	credKubeadm   CredentialSource = "kubeadm admin.conf"
)

// HostFiles is what choosing credentials looks at on the host.
type HostFiles struct {
	env    func(string) (string, bool)
	exists func(string) bool
}

func OSHostFiles() HostFiles {
	return HostFiles{env: os.LookupEnv, exists: func(p string) bool {
		st, err := os.Stat(p)
		return err == nil && !st.IsDir()
	}}
}

// chooseCredentials picks the API credentials as kube-vip does for the
// installs its documents describe: the kubeconfig given (flag or
// environment), else the Pod's ServiceAccount, else kubeadm's
// /etc/kubernetes/admin.conf (a kubeadm static Pod mounts it and sets
// nothing). It returns the source and the kubeconfig path ("" = in-cluster).
func chooseCredentials(kubeconfig string, h HostFiles) (CredentialSource, string, error) {
	if kubeconfig != "" {
		return credExplicit, kubeconfig, nil
	}
	host, _ := h.env("KUBERNETES_SERVICE_HOST")
	port, _ := h.env("KUBERNETES_SERVICE_PORT")
	if host != "" && port != "" && h.exists(inClusterToken) {
		return credInCluster, "", nil
	}
	if h.exists(kubeadmKubeconfig) {
		return credKubeadm, kubeadmKubeconfig, nil
	}
	return "", "", fmt.Errorf("%w: no API credentials: no --kubeconfig (KUBECONFIG, k8s_config_file, --k8sConfigPath), "+
		"no in-cluster ServiceAccount (KUBERNETES_SERVICE_HOST and %s) and no %s", ErrConfig, inClusterToken, kubeadmKubeconfig)
}

// ResolveCredentials chooses the credentials once and logs which.
func (c *Config) ResolveCredentials(h HostFiles, log logr.Logger) error {
	src, path, err := chooseCredentials(c.Kubeconfig, h)
	if err != nil {
		return err
	}
	c.Credentials, c.Kubeconfig = src, path
	if path == "" {
		log.Info("API credentials: in-cluster ServiceAccount")
	} else {
		log.Info("API credentials: kubeconfig file", "source", string(src), "path", path)
	}
	return nil
}
