package cluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// containerdConfig is one node's containerd: own root, state, socket and
// runc root; cgroupfs; restrict_oom_score_adj because this kind of VM lacks
// CAP_SYS_RESOURCE (runc could not set the sandbox's -998 otherwise).
const containerdConfig = `version = 2
root = "{{D}}/containerd"
state = "{{D}}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{{D}}/state/containerd.sock"
[ttrpc]
  address = "{{D}}/state/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{{D}}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{{PAUSE}}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{{D}}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{{CNIBIN}}"
    conf_dir = "{{D}}/cni/net.d"
`

// cniConfig: bridge + host-local on the node's pod range (IPAM data per
// node), portmap. No ipMasq: the plugin's rule would masquerade pod-to-pod
// traffic across nodes too; nodeNetwork masquerades only what leaves the
// cluster's pod range (as kindnet does), so pods see each other's addresses.
const cniConfig = `{"cniVersion": "0.4.0", "name": "{{NET}}", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "{{CIDR}}"}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "{{D}}/cni/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
`

// kubeletConfig: cgroupfs with a cgroup root per node (cgroup v1 allowed),
// oomScoreAdj 0 (no CAP_SYS_RESOURCE), webhook authentication and
// authorization against the API server, x509 clients of the lab CA.
const kubeletConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /{{NAME}}
failSwapOn: false
oomScoreAdj: 0
staticPodPath: {{D}}/manifests
podLogsDir: {{D}}/pod-logs
containerRuntimeEndpoint: unix://{{D}}/state/containerd.sock
address: {{IP}}
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: {{PKI}}/ca.crt}
authorization: {mode: Webhook}
clusterDNS: [10.96.0.10]
clusterDomain: cluster.local
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
serializeImagePulls: false
`

// kubeProxyConfig: nf_conntrack_max can be set only from the initial
// namespace, so conntrack sizing is left alone.
const kubeProxyConfig = `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: {{D}}/kube-proxy.kubeconfig}
hostnameOverride: {{NAME}}
mode: {{MODE}}
clusterCIDR: ` + ClusterCIDR + `
conntrack: {maxPerCore: 0, min: 0}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
`

func expand(tmpl string, kv ...string) string {
	return strings.NewReplacer(kv...).Replace(tmpl)
}

// cgroupHierarchies lists the mounted cgroup v1 hierarchies and the
// unified one.
func cgroupHierarchies() ([]string, error) {
	ents, err := os.ReadDir("/sys/fs/cgroup")
	if err != nil {
		return nil, err
	}
	var hs []string
	for _, e := range ents {
		if e.IsDir() {
			hs = append(hs, filepath.Join("/sys/fs/cgroup", e.Name()))
		}
	}
	return hs, nil
}

// makeCgroup creates the node's cgroup root in every hierarchy (kubelet
// refuses a root that does not exist); cpuset needs cpus and mems first.
//
// A cgroup root that exists already in any hierarchy is another lab's or a
// leftover: refused (ErrTaken), not recorded, left alone. It is recorded
// once the first folder is made.
func (s *State) makeCgroup(name string) error {
	hs, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	if err := checkFree(cgroupClaims(name, hs), pathExists); err != nil {
		return err
	}
	for i, h := range hs {
		d := filepath.Join(h, name)
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
		if i == 0 {
			s.mu.Lock()
			s.Cgroups = append(s.Cgroups, "/"+name)
			s.mu.Unlock()
			if err := s.save(); err != nil {
				return err
			}
		}
		if filepath.Base(h) == "cpuset" {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				b, err := os.ReadFile(filepath.Join(h, f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(d, f), b, 0o644); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// startNode brings node i up: namespace network, cgroups, containerd with
// the lab images, kubelet and kube-proxy.
func (c *Cluster) startNode(ctx context.Context, i int) error {
	name := NodeName(i)
	n := NodeState{Name: name, IP: NodeIP(i), PodCIDR: PodCIDR(i), Dir: filepath.Join(c.st.Dir, name)}
	c.st.mu.Lock()
	c.st.Nodes = append(c.st.Nodes, n)
	c.st.mu.Unlock()
	if err := c.st.nodeNetwork(i, c.cfg.Nodes); err != nil {
		return err
	}
	if err := c.st.makeCgroup(name); err != nil {
		return err
	}
	for _, sub := range []string{"state", "cni/net.d", "manifests", "pod-logs", "kubelet", "pki"} {
		if err := os.MkdirAll(filepath.Join(n.Dir, sub), 0o755); err != nil {
			return err
		}
	}
	r := []string{"{{D}}", n.Dir, "{{NAME}}", name, "{{IP}}", n.IP, "{{CIDR}}", n.PodCIDR, "{{NET}}", cniNetwork,
		"{{PAUSE}}", PauseImage, "{{CNIBIN}}", cniBinDir, "{{PKI}}", c.pki.dir, "{{MODE}}", c.st.ProxyMode}
	files := map[string]string{
		"containerd.toml":           expand(containerdConfig, r...),
		"cni/net.d/10-vcl.conflist": expand(cniConfig, r...),
		"kubelet.yaml":              expand(kubeletConfig, r...),
		"kube-proxy.yaml":           expand(kubeProxyConfig, r...),
	}
	for f, body := range files {
		if err := os.WriteFile(filepath.Join(n.Dir, f), []byte(body), 0o644); err != nil {
			return err
		}
	}
	if err := c.pki.kubeconfig(filepath.Join(n.Dir, "kubelet.kubeconfig"), c.labServer(), "system:node:"+name); err != nil {
		return err
	}
	if err := c.pki.kubeconfig(filepath.Join(n.Dir, "kube-proxy.kubeconfig"), c.labServer(), "system:kube-proxy"); err != nil {
		return err
	}
	if err := c.startContainerd(ctx, name); err != nil {
		return err
	}
	for _, img := range c.images {
		if _, err := run("ctr", "-a", n.Socket(), "-n", "k8s.io", "images", "import", img); err != nil {
			return err
		}
	}
	if err := c.startKubelet(name); err != nil {
		return err
	}
	return c.startKubeProxy(name)
}

// startContainerd starts (or restarts) node's containerd and waits for its
// socket.
func (c *Cluster) startContainerd(ctx context.Context, name string) error {
	n, err := c.st.node(name)
	if err != nil {
		return err
	}
	p, err := startProc("containerd", name, filepath.Join(n.Dir, "containerd.log"), "containerd",
		"--config", filepath.Join(n.Dir, "containerd.toml"))
	c.st.mu.Lock()
	n.Containerd = p
	c.st.mu.Unlock()
	if serr := c.st.save(); serr != nil && err == nil {
		err = serr
	}
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		if conn, err := net.Dial("unix", n.Socket()); err == nil {
			conn.Close()
			return nil
		}
		if !p.Alive() {
			return fmt.Errorf("containerd of %s exited:\n%s", name, tail(p.Log, 20))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("containerd of %s: no socket:\n%s", name, tail(p.Log, 20))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// startKubelet starts node's kubelet.
func (c *Cluster) startKubelet(name string) error {
	n, err := c.st.node(name)
	if err != nil {
		return err
	}
	p, err := startProc("kubelet", name, filepath.Join(n.Dir, "kubelet.log"), filepath.Join(c.st.BinDir, "kubelet"),
		"--config", filepath.Join(n.Dir, "kubelet.yaml"),
		"--kubeconfig", filepath.Join(n.Dir, "kubelet.kubeconfig"),
		"--root-dir", filepath.Join(n.Dir, "kubelet"), "--cert-dir", filepath.Join(n.Dir, "pki"),
		"--hostname-override", name, "--node-ip", n.IP, "--cloud-provider=external", "--v=1")
	c.st.mu.Lock()
	n.Kubelet = p
	c.st.mu.Unlock()
	if serr := c.st.save(); serr != nil && err == nil {
		err = serr
	}
	return err
}

// startKubeProxy starts node's kube-proxy in the cluster's proxy mode.
func (c *Cluster) startKubeProxy(name string) error {
	n, err := c.st.node(name)
	if err != nil {
		return err
	}
	p, err := startProc("kube-proxy", name, filepath.Join(n.Dir, "kube-proxy.log"), filepath.Join(c.st.BinDir, "kube-proxy"),
		"--config", filepath.Join(n.Dir, "kube-proxy.yaml"))
	c.st.mu.Lock()
	n.KubeProxy = p
	c.st.mu.Unlock()
	if serr := c.st.save(); serr != nil && err == nil {
		err = serr
	}
	return err
}

// SetProxyMode restarts every live kube-proxy in mode (iptables or
// nftables); kube-proxy removes the other mode's rules when it starts.
func (c *Cluster) SetProxyMode(mode string) error {
	if mode != KubeProxyIPT && mode != KubeProxyNFT {
		return fmt.Errorf("cluster: kube-proxy mode %q", mode)
	}
	c.st.ProxyMode = mode
	for i := range c.st.Nodes {
		n := &c.st.Nodes[i]
		if !n.KubeProxy.Alive() {
			continue
		}
		if err := n.KubeProxy.Stop(10 * time.Second); err != nil {
			return err
		}
		cfg := filepath.Join(n.Dir, "kube-proxy.yaml")
		b, err := os.ReadFile(cfg)
		if err != nil {
			return err
		}
		lines := strings.Split(string(b), "\n")
		for j, l := range lines {
			if strings.HasPrefix(l, "mode: ") {
				lines[j] = "mode: " + mode
			}
		}
		if err := os.WriteFile(cfg, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
			return err
		}
		if err := c.startKubeProxy(n.Name); err != nil {
			return err
		}
	}
	return c.st.save()
}

// WaitProxyMode waits until every live node's kube-proxy has programmed its
// mode: the nftables table "ip kube-proxy" without the iptables chain
// KUBE-SERVICES, or the other way round.
func (c *Cluster) WaitProxyMode(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var last string
	err := Poll(ctx, 200*time.Millisecond, func() (bool, error) {
		for _, n := range c.st.Nodes {
			if c.killed[n.Name] {
				continue
			}
			_, nftErr := runIn(n.Name, "nft", "list", "table", "ip", "kube-proxy")
			_, iptErr := runIn(n.Name, "iptables", "-t", "nat", "-S", "KUBE-SERVICES")
			nft, ipt := nftErr == nil, iptErr == nil
			last = fmt.Sprintf("%s: nftables table %v, iptables chain %v", n.Name, nft, ipt)
			if c.st.ProxyMode == KubeProxyNFT && (!nft || ipt) || c.st.ProxyMode == KubeProxyIPT && (nft || !ipt) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("kube-proxy %s mode not in place (%s): %w", c.st.ProxyMode, last, err)
	}
	return nil
}
