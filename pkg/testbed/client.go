package testbed

import (
	"context"
	"fmt"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// tokenLifetime is the lifetime asked for minted ServiceAccount tokens.
const tokenLifetime = 24 * 60 * 60

// AdminConfig returns a new client config for user "admin" (group
// system:masters) with generous client-side rate limits. With WithNetns its
// connections are opened inside the namespace.
func (e *Env) AdminConfig() *rest.Config {
	return e.config(e.sec.adminToken)
}

// config returns a client config that authenticates with token.
func (e *Env) config(token string) *rest.Config {
	c := &rest.Config{
		Host:            e.Server(),
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: e.CAData()},
		UserAgent:       "vip-testbed",
		QPS:             500,
		Burst:           1000,
	}
	if e.opts.Netns != "" {
		c.Dial = dialer(e.opts.Netns)
	}
	return c
}

// TokenConfig returns a client config that authenticates with token, for
// example one from ServiceAccountToken.
func (e *Env) TokenConfig(token string) *rest.Config { return e.config(token) }

// AdminClient returns a new clientset for user "admin".
func (e *Env) AdminClient() kubernetes.Interface {
	// NewForConfig fails only for invalid configs; ours is always valid.
	return kubernetes.NewForConfigOrDie(e.AdminConfig())
}

// Kubeconfig writes a kubeconfig file at path for a program under test that
// authenticates with token (the admin token when token is empty). The server
// address is Server(), reachable from wherever the servers' address is.
func (e *Env) Kubeconfig(path, token string) error {
	if token == "" {
		token = e.sec.adminToken
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["testbed"] = &clientcmdapi.Cluster{Server: e.Server(), CertificateAuthorityData: e.CAData()}
	cfg.AuthInfos["testbed"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["testbed"] = &clientcmdapi.Context{Cluster: "testbed", AuthInfo: "testbed", Namespace: "default"}
	cfg.CurrentContext = "testbed"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("testbed: write kubeconfig %s: %w", path, err)
	}
	return nil
}

// ServiceAccountToken returns a token for ServiceAccount ns/name minted with
// the TokenRequest API (valid 24 h), creating the namespace and the
// ServiceAccount first if they are missing.
func (e *Env) ServiceAccountToken(ctx context.Context, ns, name string) (string, error) {
	cs := e.AdminClient()
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("testbed: create namespace %s: %w", ns, err)
	}
	_, err = cs.CoreV1().ServiceAccounts(ns).Create(ctx,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("testbed: create serviceaccount %s/%s: %w", ns, name, err)
	}
	exp := int64(tokenLifetime)
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}},
		metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("testbed: token for serviceaccount %s/%s: %w", ns, name, err)
	}
	return tr.Status.Token, nil
}
