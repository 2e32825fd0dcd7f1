package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/vip-lb/vip/pkg/testbed"
)

// Cluster is a running lab cluster.
type Cluster struct {
	cfg    Config
	st     *State
	pki    *pki
	images []string        // docker-archive tarballs imported into every node
	killed map[string]bool // nodes KillNode killed

	// Admin is a client with the admin token, dialing from the client
	// namespace.
	Admin  kubernetes.Interface
	config *rest.Config
}

// dialerIn opens sockets in netns name.
var dialerIn = testbed.DialerIn

// Up builds the lab images and brings a cluster up: network, control plane,
// nodes. It returns once every node is Ready. On failure everything started
// is torn down again.
func Up(ctx context.Context, cfg Config) (c *Cluster, err error) {
	cfg, err = cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, stateFile)); err == nil {
		return nil, fmt.Errorf("%w: state in %s", ErrExists, cfg.Dir)
	}
	// Nothing is made when a name the cluster needs is taken (another
	// lab's, or a leftover): teardown then never touches it.
	agentFiles := agentStateFiles(clusterNodes(cfg.Nodes))
	claims, err := labClaims(clusterNamespaces(cfg.Nodes), clusterNodes(cfg.Nodes), agentFiles)
	if err != nil {
		return nil, err
	}
	if err := checkFree(append(claims, folderClaim(cfg.Dir)...), pathExists); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	c = &Cluster{cfg: cfg, killed: map[string]bool{}, st: &State{Dir: cfg.Dir, BinDir: cfg.BinDir, RepoDir: cfg.RepoDir, ProxyMode: cfg.ProxyMode}}
	for _, p := range []string{"/var/lib/kubelet", "/var/log/containers", "/var/lib/cni", "/run/containerd", agentStateDir} {
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			c.st.HostPaths = append(c.st.HostPaths, p)
		}
	}
	// The agents' state files were checked absent above: whatever is there
	// at teardown is theirs (the folder may be older than the cluster).
	c.st.HostFiles = agentFiles
	if err := c.st.save(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			if derr := c.st.Down(); derr != nil {
				err = errors.Join(err, fmt.Errorf("teardown: %w", derr))
			}
			c = nil
		}
	}()
	t0 := time.Now()
	if c.images, err = buildImages(cfg.RepoDir, cfg.BinDir, filepath.Join(cfg.Dir, "images")); err != nil {
		return c, err
	}
	cfg.Logf("cluster: images built in %v", since(t0))
	t1 := time.Now()
	if err := c.st.buildSwitch(); err != nil {
		return c, err
	}
	if err := c.st.addMember(CPNS, APIServerIP); err != nil {
		return c, err
	}
	if err := c.st.addMember(ClientNS, ClientIP); err != nil {
		return c, err
	}
	if _, err := runIn(ClientNS, "sysctl", "-qw", "net.ipv4.conf.all.arp_accept=1"); err != nil {
		return c, err
	}
	for i := 1; i <= cfg.Nodes; i++ {
		if err := c.st.addMember(NodeName(i), NodeIP(i)); err != nil {
			return c, err
		}
	}
	members := []string{CPNS}
	for i := 1; i <= cfg.Nodes; i++ {
		members = append(members, NodeName(i))
	}
	if err := c.st.addExternal(members); err != nil {
		return c, err
	}
	if c.pki, err = writePKI(filepath.Join(cfg.Dir, "pki"), cfg.Nodes); err != nil {
		return c, err
	}
	if err := c.startControlPlane(ctx); err != nil {
		return c, err
	}
	cfg.Logf("cluster: control plane ready in %v", since(t1))
	if err := c.writeKubeconfigs(); err != nil {
		return c, err
	}
	for i := 1; i <= cfg.Nodes; i++ {
		if err := c.startNode(ctx, i); err != nil {
			return c, fmt.Errorf("node %s: %w", NodeName(i), err)
		}
	}
	if err := c.WaitNodesReady(ctx); err != nil {
		return c, err
	}
	if err := c.CheckAlive(); err != nil {
		return c, err
	}
	cfg.Logf("cluster: %d nodes Ready, %v after the control plane (%v in all)", cfg.Nodes, since(t1), since(t0))
	return c, nil
}

func since(t time.Time) time.Duration { return time.Since(t).Round(time.Millisecond) }

// writeKubeconfigs writes the admin kubeconfig for use inside the lab
// (kubeconfig.lab, server 10.98.0.2) and sets up the admin client.
func (c *Cluster) writeKubeconfigs() error {
	if err := c.pki.kubeconfig(c.LabKubeconfig(), c.labServer(), "admin"); err != nil {
		return err
	}
	ca, err := os.ReadFile(c.pki.file("ca.crt"))
	if err != nil {
		return err
	}
	c.config = &rest.Config{
		Host: c.labServer(), BearerToken: c.pki.tokens["admin"],
		TLSClientConfig: rest.TLSClientConfig{CAData: ca},
		Dial:            dialerIn(ClientNS), QPS: 50, Burst: 100,
	}
	c.Admin, err = kubernetes.NewForConfig(c.config)
	return err
}

// LabKubeconfig is the admin kubeconfig for clients in the lab's namespaces.
func (c *Cluster) LabKubeconfig() string { return filepath.Join(c.st.Dir, "kubeconfig.lab") }

// HostKubeconfig is the admin kubeconfig for the host, through the
// forwarder on loopback (Forward).
func (c *Cluster) HostKubeconfig() string { return filepath.Join(c.st.Dir, "kubeconfig") }

// RESTConfig returns a copy of the admin client configuration.
func (c *Cluster) RESTConfig() *rest.Config { return rest.CopyConfig(c.config) }

// State returns the cluster's state (for Down from another process).
func (c *Cluster) State() *State { return c.st }

// Dir is the cluster folder.
func (c *Cluster) Dir() string { return c.st.Dir }

// Nodes lists the node names.
func (c *Cluster) Nodes() []string {
	var n []string
	for _, s := range c.st.Nodes {
		n = append(n, s.Name)
	}
	return n
}

// Logs returns the last lines of every component's log.
func (c *Cluster) Logs(lines int) string {
	s := ""
	for _, p := range c.st.Control {
		s += "---- " + p.Name + " (" + p.Log + ")\n" + tail(p.Log, lines) + "\n"
	}
	for _, n := range c.st.Nodes {
		for _, p := range []Proc{n.Containerd, n.Kubelet, n.KubeProxy} {
			if p.Log != "" {
				s += "---- " + n.Name + " " + p.Name + " (" + p.Log + ")\n" + tail(p.Log, lines) + "\n"
			}
		}
	}
	return s
}

// CheckAlive reports every control-plane or node process that has exited
// (except on nodes killed by KillNode), with its log's tail.
func (c *Cluster) CheckAlive() error {
	var errs []error
	for _, p := range c.st.Control {
		if !p.Alive() {
			errs = append(errs, fmt.Errorf("%s exited:\n%s", p.Name, tail(p.Log, 20)))
		}
	}
	for _, n := range c.st.Nodes {
		if c.killed[n.Name] {
			continue
		}
		for _, p := range []Proc{n.Containerd, n.Kubelet, n.KubeProxy} {
			if !p.Alive() {
				errs = append(errs, fmt.Errorf("%s %s exited:\n%s", n.Name, p.Name, tail(p.Log, 20)))
			}
		}
	}
	return errors.Join(errs...)
}

// Down tears the cluster down (see State.Down).
func (c *Cluster) Down() error { return c.st.Down() }

// KillNode kills node's kubelet, kube-proxy and containerd (SIGKILL); its
// pods' processes keep running, cut off once the port is down.
func (c *Cluster) KillNode(name string) error {
	n, err := c.st.node(name)
	if err != nil {
		return err
	}
	c.killed[name] = true
	var errs []error
	for _, p := range []Proc{n.Kubelet, n.KubeProxy, n.Containerd} {
		errs = append(errs, p.Signal(9))
	}
	return errors.Join(errs...)
}

// NodeIndex returns i for NodeName(i).
func NodeIndex(name string) (int, error) {
	var i int
	if _, err := fmt.Sscanf(name, Prefix+"-n%d", &i); err != nil {
		return 0, fmt.Errorf("node %q: %w", name, err)
	}
	return i, nil
}
