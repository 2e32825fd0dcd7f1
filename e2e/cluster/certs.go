package cluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// pki is the control plane's credentials, as files in Dir/pki.
type pki struct {
	dir    string
	tokens map[string]string // user -> bearer token
}

func (p *pki) file(name string) string { return filepath.Join(p.dir, name) }

// Users with static tokens: the admin (system:masters), one per node
// (system:node:<name> in system:nodes, for the Node authorizer),
// kube-proxy, kube-controller-manager and kube-scheduler (the users the
// bootstrap RBAC policy knows).
func tokenUsers(nodes int) [][3]string { // name, uid, groups
	u := [][3]string{
		{"admin", "admin", "system:masters"},
		{"system:kube-proxy", "kube-proxy", ""},
		{"system:kube-controller-manager", "kube-controller-manager", ""},
		{"system:kube-scheduler", "kube-scheduler", ""},
	}
	for i := 1; i <= nodes; i++ {
		u = append(u, [3]string{"system:node:" + NodeName(i), NodeName(i), "system:nodes"})
	}
	return u
}

// writePKI makes a CA, the API server's serving certificate, its client
// certificate towards the kubelets, the service-account key pair and the
// token file.
func writePKI(dir string, nodes int) (*pki, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p := &pki{dir: dir, tokens: map[string]string{}}
	var csv strings.Builder
	for _, u := range tokenUsers(nodes) {
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			return nil, err
		}
		tok := hex.EncodeToString(b)
		p.tokens[u[0]] = tok
		groups := ""
		if u[2] != "" {
			groups = `,"` + u[2] + `"`
		}
		fmt.Fprintf(&csv, "%s,%s,%s%s\n", tok, u[0], u[1], groups)
	}
	if err := os.WriteFile(p.file("tokens.csv"), []byte(csv.String()), 0o600); err != nil {
		return nil, err
	}

	sa, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(&sa.PublicKey)
	if err != nil {
		return nil, err
	}
	if err := writePEM(p.file("sa.key"), "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(sa)); err != nil {
		return nil, err
	}
	if err := writePEM(p.file("sa.pub"), "PUBLIC KEY", pub); err != nil {
		return nil, err
	}

	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "vip-cluster-lab-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	if err := writePEM(p.file("ca.crt"), "CERTIFICATE", caDER); err != nil {
		return nil, err
	}
	serving := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local"},
		IPAddresses: []net.IP{net.ParseIP(APIServerIP), net.IPv4(127, 0, 0, 1), net.ParseIP("10.96.0.1")},
	}
	if err := p.issue("apiserver", serving, ca, caKey); err != nil {
		return nil, err
	}
	client := &x509.Certificate{
		SerialNumber: big.NewInt(3),
		Subject:      pkix.Name{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}},
		NotBefore:    now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if err := p.issue("kubelet-client", client, ca, caKey); err != nil {
		return nil, err
	}
	return p, nil
}

// issue signs tmpl with the CA and writes <name>.crt and <name>.key.
func (p *pki) issue(name string, tmpl, ca *x509.Certificate, caKey *ecdsa.PrivateKey) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("certificate %s: %w", name, err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := writePEM(p.file(name+".crt"), "CERTIFICATE", der); err != nil {
		return err
	}
	return writePEM(p.file(name+".key"), "EC PRIVATE KEY", keyDER)
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

// kubeconfig writes a kubeconfig for server with a bearer token.
func (p *pki) kubeconfig(path, server, user string) error {
	ca, err := os.ReadFile(p.file("ca.crt"))
	if err != nil {
		return err
	}
	tok, ok := p.tokens[user]
	if !ok {
		return fmt.Errorf("no token for %s", user)
	}
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: vip-lab
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    token: %s
contexts:
- name: vip-lab
  context: {cluster: vip-lab, user: %s}
current-context: vip-lab
`, server, b64(ca), user, tok, user)
	return os.WriteFile(path, []byte(cfg), 0o600)
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
