package testbed

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// secrets are the credential files written into the Env's folder.
type secrets struct {
	adminToken string // bearer token of user "admin" in group system:masters
	caPEM      []byte // CA that signed the serving certificate
	tokenFile  string // --token-auth-file
	saKey      string // --service-account-signing-key-file (RSA, PKCS#1)
	saPub      string // --service-account-key-file (PKIX public key)
	tlsCert    string // --tls-cert-file
	tlsKey     string // --tls-private-key-file
}

// writeSecrets generates the admin token, the service-account key pair and a
// CA plus serving certificate valid for address, loopback, the "kubernetes"
// DNS names and the first address of each service range.
func writeSecrets(dir, address, serviceCIDRs string) (*secrets, error) {
	s := &secrets{
		tokenFile: filepath.Join(dir, "tokens.csv"),
		saKey:     filepath.Join(dir, "sa.key"),
		saPub:     filepath.Join(dir, "sa.pub"),
		tlsCert:   filepath.Join(dir, "apiserver.crt"),
		tlsKey:    filepath.Join(dir, "apiserver.key"),
	}
	tok := make([]byte, 16)
	if _, err := rand.Read(tok); err != nil {
		return nil, fmt.Errorf("admin token: %w", err)
	}
	s.adminToken = hex.EncodeToString(tok)
	if err := os.WriteFile(s.tokenFile, []byte(s.adminToken+",admin,admin,system:masters\n"), 0o600); err != nil {
		return nil, fmt.Errorf("write token file: %w", err)
	}

	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("service-account key: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("service-account public key: %w", err)
	}
	if err := writePEM(s.saKey, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(saKey)); err != nil {
		return nil, err
	}
	if err := writePEM(s.saPub, "PUBLIC KEY", pub); err != nil {
		return nil, err
	}

	ips := []net.IP{net.ParseIP(address), net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	if ips[0] == nil {
		return nil, fmt.Errorf("address %q is not an IP", address)
	}
	for _, c := range strings.Split(serviceCIDRs, ",") {
		p, err := netip.ParsePrefix(strings.TrimSpace(c))
		if err != nil {
			return nil, fmt.Errorf("service range %q: %w", c, err)
		}
		ips = append(ips, p.Masked().Addr().Next().AsSlice())
	}
	caPEM, certPEM, keyDER, err := servingCert(ips)
	if err != nil {
		return nil, err
	}
	s.caPEM = caPEM
	if err := os.WriteFile(s.tlsCert, certPEM, 0o644); err != nil {
		return nil, fmt.Errorf("write serving cert: %w", err)
	}
	if err := writePEM(s.tlsKey, "EC PRIVATE KEY", keyDER); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), caPEM, 0o644); err != nil {
		return nil, fmt.Errorf("write CA: %w", err)
	}
	return s, nil
}

// servingCert makes a self-signed CA and a server certificate for ips and
// the in-cluster names of the API server. It returns both certificates as
// PEM and the server key as SEC 1 DER.
func servingCert(ips []net.IP) (caPEM, certPEM, keyDER []byte, err error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("CA key: %w", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "vip-testbed-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("serving key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local"},
		IPAddresses: ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("serving certificate: %w", err)
	}
	keyDER, err = x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("marshal serving key: %w", err)
	}
	caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return caPEM, certPEM, keyDER, nil
}

// writePEM writes one PEM block to path with mode 0600.
func writePEM(path, typ string, der []byte) error {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
