package cluster

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
)

// The kubeadm lab's addresses: control-plane nodes at 10.98.0.21.. on the
// lab bridge and the control-plane VIP, outside vip's Service pool.
const (
	KubeadmVIP       = "10.98.0.40"
	kubeadmLeaseNS   = "kube-system"
	kubeadmLease     = "plndr-cp-lock" // the generator's default --leaseName
	kubeadmStateFile = "kubeadm.json"
)

// kubeadmHostDir is the host folder the nodes' /etc/kubernetes is bound on
// (in their own mount namespaces: it stays empty on the host).
const kubeadmHostDir = "/etc/kubernetes"

// kubeadmHosts is the nodes' /etc/hosts: their names, so that kubeadm's
// hostname check asks no DNS server.
func kubeadmHosts(nodes int) string {
	s := "127.0.0.1 localhost\n"
	for i := 1; i <= nodes; i++ {
		s += KubeadmNodeIP(i) + " " + KubeadmNodeName(i) + "\n"
	}
	return s
}

// KubeadmNodeName is the name (namespace, cgroup root) of control-plane
// node i (1-based).
func KubeadmNodeName(i int) string { return fmt.Sprintf("%s-c%d", kubeadmPrefix, i) }

// KubeadmNodeIP is control-plane node i's address.
func KubeadmNodeIP(i int) string { return fmt.Sprintf("10.98.0.%d", 20+i) }

// kubeadmIgnoredPreflight are the preflight checks that fail on this kind
// of machine for reasons that do not touch what the lab shows:
//   - SystemVerification: the kernel runs cgroup v1 (the kubelet is told
//     failCgroupV1: false);
//   - Service-Kubelet, FileExisting-kubelet... are warnings only and need
//     nothing here (there is no systemd: the lab starts the kubelet the way
//     kubeadm's systemd drop-in would, see kubeletWhenConfigured).
var kubeadmIgnoredPreflight = []string{"SystemVerification"}

// kubeletConfiguration is shared by every node (kubeadm uploads it):
// cgroupfs (cgroup v1 allowed), oomScoreAdj 0 because this kind of VM has no
// CAP_SYS_RESOURCE, no image garbage collection (the images cannot be pulled
// again), eviction thresholds that a shared test machine does not trip.
// The per-node cgroup root is a kubelet flag (kubeletExtraArgs).
const kubeletConfiguration = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
oomScoreAdj: 0
imageGCHighThresholdPercent: 100
serializeImagePulls: false
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
`

// nodeRegistration is one node's part of the Init/JoinConfiguration.
func nodeRegistration(i int, socket string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "nodeRegistration:\n  name: %s\n  criSocket: unix://%s\n", KubeadmNodeName(i), socket)
	fmt.Fprintf(&b, "  kubeletExtraArgs:\n  - {name: node-ip, value: %s}\n  - {name: cgroup-root, value: /%s}\n",
		KubeadmNodeIP(i), KubeadmNodeName(i))
	b.WriteString("  ignorePreflightErrors:\n")
	for _, e := range kubeadmIgnoredPreflight {
		fmt.Fprintf(&b, "  - %s\n", e)
	}
	return b.String()
}

// initConfiguration is the first node's `kubeadm init --config`: the VIP
// as controlPlaneEndpoint, stacked etcd (without fsync: a lab on a shared
// disk), no CoreDNS and no kube-proxy addons (kubeadm_images.go says why),
// a bootstrap token and a certificate key chosen here so that the joins
// know them.
func initConfiguration(socket, kubeVer, etcdVer, token, certKey string) string {
	return `apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
bootstrapTokens:
- token: ` + token + `
  ttl: 2h0m0s
certificateKey: ` + certKey + `
localAPIEndpoint:
  advertiseAddress: ` + KubeadmNodeIP(1) + `
  bindPort: 6443
` + nodeRegistration(1, socket) + `---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: ` + kubeVer + `
controlPlaneEndpoint: ` + KubeadmVIP + `:6443
networking:
  serviceSubnet: ` + ServiceCIDR + `
  podSubnet: ` + ClusterCIDR + `
etcd:
  local:
    imageTag: ` + etcdVer + `
    extraArgs:
    - {name: unsafe-no-fsync, value: "true"}
dns:
  disabled: true
proxy:
  disabled: true
---
` + kubeletConfiguration
}

// joinConfiguration is node i's `kubeadm join --config` as a further
// control-plane node: discovery through the VIP with the CA pinned, the
// certificates downloaded with the key `kubeadm init --upload-certs` used.
func joinConfiguration(i int, socket, token, caHash, certKey string) string {
	return `apiVersion: kubeadm.k8s.io/v1beta4
kind: JoinConfiguration
` + nodeRegistration(i, socket) + `discovery:
  bootstrapToken:
    apiServerEndpoint: ` + KubeadmVIP + `:6443
    token: ` + token + `
    caCertHashes:
    - ` + caHash + `
controlPlane:
  localAPIEndpoint:
    advertiseAddress: ` + KubeadmNodeIP(i) + `
    bindPort: 6443
  certificateKey: ` + certKey + `
`
}

// newBootstrapToken returns a random token in kubeadm's form
// [a-z0-9]{6}.[a-z0-9]{16}.
func newBootstrapToken() (string, error) {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 22)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b[:6]) + "." + string(b[6:]), nil
}

// newCertificateKey returns a random AES-256 key, hex (kubeadm's form).
func newCertificateKey() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// caCertHash is kubeadm's --discovery-token-ca-cert-hash of a CA file:
// sha256 of its SubjectPublicKeyInfo.
func caCertHash(caFile string) (string, error) {
	b, err := os.ReadFile(caFile)
	if err != nil {
		return "", err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return "", fmt.Errorf("%s: no PEM block", caFile)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return "", fmt.Errorf("%s: %w", caFile, err)
	}
	s := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(s[:]), nil
}
