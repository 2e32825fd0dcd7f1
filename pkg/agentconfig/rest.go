package agentconfig

import (
	"fmt"
	"net/netip"
	"net/url"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vip-lb/vip/internal/listwatch"
)

// RestConfig is the client configuration of the agent's credentials
// (ResolveCredentials chose them), with its rate limits and the fast
// list/watch retry.
func (c Config) RestConfig() (*rest.Config, error) {
	var rc *rest.Config
	var err error
	if c.Kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil && c.Credentials != "" {
		err = fmt.Errorf("%s credentials: %w", c.Credentials, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: Kubernetes client: %w", ErrConfig, err)
	}
	rc.QPS, rc.Burst = c.QPS, c.Burst
	rc.UserAgent = "vip-agent"
	rc.Wrap(listwatch.Retry)
	return rc, nil
}

// LocalRestConfig is the cluster credentials pointed at this node's own API
// server. Its serving certificate is checked for the name "kubernetes"
// (every kube-apiserver certificate has it) when the URL holds an address.
func (c Config) LocalRestConfig() (*rest.Config, error) {
	rc, err := c.RestConfig()
	if err != nil {
		return nil, err
	}
	local, err := c.CP.LocalURL()
	if err != nil {
		return nil, fmt.Errorf("%w: --local-apiserver: %w", ErrConfig, err)
	}
	lc := rest.CopyConfig(rc)
	lc.Host = local
	if u, _ := url.Parse(local); u != nil {
		if _, err := netip.ParseAddr(u.Hostname()); err == nil && lc.TLSClientConfig.ServerName == "" && !lc.TLSClientConfig.Insecure {
			lc.TLSClientConfig.ServerName = "kubernetes"
		}
	}
	lc.UserAgent = "vip-agent/control-plane"
	return lc, nil
}
