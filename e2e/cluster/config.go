package cluster

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
)

// Fixed names and addresses of the lab. Only one cluster runs at a time on a
// machine (Up refuses a second); everything lives in namespaces named
// Prefix-*, on 10.98.0.0/24, so nothing collides with the process lab
// (vlab<pid>-*).
const (
	Prefix      = "vcl"
	Subnet      = "10.98.0.0/24"
	gatewayIP   = "10.98.0.1" // on the bridge, in the switch namespace; it leads nowhere
	APIServerIP = "10.98.0.2"
	ClientIP    = "10.98.0.100"
	// ExternalIP is a second client on the same bridge but outside the
	// nodes' /16 (on-link routes both ways, no gateway): upstream's
	// ExternalTrafficPolicy tests take any source inside the first node's
	// /16 for a masqueraded one.
	ExternalIP     = "10.99.0.100"
	externalSubnet = "10.99.0.0/24"
	PoolRange      = "10.98.0.200-10.98.0.219" // vip's pool (range-global)
	ServiceCIDR    = "10.96.0.0/16"
	ClusterCIDR    = "10.244.0.0/16"
	apiPort        = 6443
	bridgeName     = "vclbr0"
	cniNetwork     = "vcl"
	ImageRepo      = "vip.local"
	ImageTag       = "lab"
	stateFile      = "state.json"
	netnsDir       = "/run/netns"
	cniBinDir      = "/usr/lib/cni"
	KubeProxyIPT   = "iptables"
	KubeProxyNFT   = "nftables"
)

// Namespace names.
var (
	SwitchNS = Prefix + "-sw"
	CPNS     = Prefix + "-cp"
	ClientNS = Prefix + "-client"
	ExtNS    = Prefix + "-ext"
)

// NodeName is the name (and namespace, and cgroup root) of node i (1-based).
func NodeName(i int) string { return Prefix + "-n" + strconv.Itoa(i) }

// NodeIP is node i's address on the lab bridge.
func NodeIP(i int) string { return "10.98.0." + strconv.Itoa(10+i) }

// PodCIDR is node i's pod range.
func PodCIDR(i int) string { return "10.244." + strconv.Itoa(i) + ".0/24" }

// PoolAddrs are the addresses of PoolRange.
func PoolAddrs() (first, last netip.Addr) {
	return netip.MustParseAddr("10.98.0.200"), netip.MustParseAddr("10.98.0.219")
}

func netnsPath(name string) string { return filepath.Join(netnsDir, name) }

// Config says where the cluster lives and what it runs.
type Config struct {
	// Dir is the cluster folder: state file, configs, logs, containerd
	// roots, kubelet roots (default: <repo>/_out/cluster).
	Dir string
	// BinDir holds etcd, kube-apiserver, kube-controller-manager,
	// kube-scheduler, kubelet, kube-proxy and kubectl (default <repo>/bin).
	BinDir string
	// RepoDir is the vip checkout: Dockerfiles, deploy/ (default: found
	// from the working directory).
	RepoDir string
	// Nodes is the number of worker nodes (default 3).
	Nodes int
	// ProxyMode is kube-proxy's mode: iptables (default) or nftables.
	ProxyMode string
	// Logf reports progress (default: discard).
	Logf func(format string, args ...any)
}

// ErrNotRoot is returned when the caller cannot create namespaces.
var ErrNotRoot = errors.New("cluster: needs root")

// ErrExists is returned by Up when a cluster (or its state) is already there.
var ErrExists = errors.New("cluster: a cluster exists already (make cluster-down)")

// Binaries the cluster runs from BinDir.
var Binaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl"}

// Commands the cluster runs from PATH (Debian packages, hack/deps.sh).
var Commands = []string{"ip", "nsenter", "containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables", "conntrack", "nft", "go"}

func (c Config) withDefaults() (Config, error) {
	if c.RepoDir == "" {
		d, err := RepoDir()
		if err != nil {
			return c, err
		}
		c.RepoDir = d
	}
	if c.Dir == "" {
		c.Dir = filepath.Join(c.RepoDir, "_out", "cluster")
	}
	if c.BinDir == "" {
		c.BinDir = filepath.Join(c.RepoDir, "bin")
	}
	if c.Nodes == 0 {
		c.Nodes = 3
	}
	if c.Nodes < 1 || c.Nodes > 9 {
		return c, fmt.Errorf("cluster: %d nodes: want 1..9", c.Nodes)
	}
	if c.ProxyMode == "" {
		c.ProxyMode = KubeProxyIPT
	}
	if c.ProxyMode != KubeProxyIPT && c.ProxyMode != KubeProxyNFT {
		return c, fmt.Errorf("cluster: kube-proxy mode %q: want iptables or nftables", c.ProxyMode)
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	var err error
	for _, p := range []*string{&c.Dir, &c.BinDir, &c.RepoDir} {
		if *p, err = filepath.Abs(*p); err != nil {
			return c, err
		}
	}
	return c, nil
}

// MissingError names what a machine lacks to run the cluster.
type MissingError struct{ What []string }

func (e *MissingError) Error() string {
	return fmt.Sprintf("cluster: missing %v (make cluster-bins; hack/deps.sh for the Debian packages)", e.What)
}

// Check reports what the machine lacks: root, binaries, commands, CNI plugins.
func (c Config) Check() error {
	c, err := c.withDefaults()
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return ErrNotRoot
	}
	var miss []string
	for _, b := range Binaries {
		if _, err := os.Stat(filepath.Join(c.BinDir, b)); err != nil {
			miss = append(miss, filepath.Join(c.BinDir, b))
		}
	}
	for _, cmd := range Commands {
		if _, err := exec.LookPath(cmd); err != nil {
			miss = append(miss, cmd)
		}
	}
	for _, p := range []string{"bridge", "host-local", "loopback", "portmap"} {
		if _, err := os.Stat(filepath.Join(cniBinDir, p)); err != nil {
			miss = append(miss, filepath.Join(cniBinDir, p))
		}
	}
	if len(miss) > 0 {
		return &MissingError{What: miss}
	}
	return nil
}

// RepoDir finds the checkout (the folder with go.mod and Dockerfile.agent)
// from the working directory upwards.
func RepoDir() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "Dockerfile.agent")); err == nil {
			return d, nil
		}
		p := filepath.Dir(d)
		if p == d {
			return "", errors.New("cluster: no vip checkout above the working directory")
		}
		d = p
	}
}
