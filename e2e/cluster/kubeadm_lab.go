package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// KubeadmLab is a control plane bootstrapped the kube-vip way: vip-agent's
// static Pod (`vip-agent manifest pod --controlplane ...`) in the first
// node's manifest folder before `kubeadm init --control-plane-endpoint
// <VIP>`, with kubeadm 1.29+'s super-admin.conf swap on that node while
// init runs; further nodes `kubeadm join --control-plane` through the VIP
// with the certificates init uploaded; stacked etcd. Its nodes are
// control-plane nodes only (no kube-proxy, no CoreDNS): what it shows is
// the API on the VIP.
type KubeadmLab struct {
	cfg     Config
	opts    KubeadmOptions
	st      *State
	ks      *KubeadmState
	images  []string
	agent   string // the vip-agent binary packed into the lab's image
	pause   string
	kubeVer string
	etcdVer string
	token   string
	certKey string

	// Manifest is what `vip-agent manifest pod` printed: the static Pod
	// every node gets (the first one with the super-admin.conf swap while
	// `kubeadm init` runs).
	Manifest string
	// GenerateArgs are the generator's arguments.
	GenerateArgs []string
	// InitTime and JoinTimes are how long `kubeadm init` and each `kubeadm
	// join` took.
	InitTime  time.Duration
	JoinTimes []time.Duration
}

// superAdminSed is kube-vip's documented edit of the saved manifest on the
// first control-plane node of kubeadm 1.29+ (and revertSuperAdmin undoes it
// once `kubeadm init` has bound admin.conf's group).
const (
	superAdminSed    = "s#path: /etc/kubernetes/admin.conf#path: /etc/kubernetes/super-admin.conf#"
	revertSuperAdmin = "s#path: /etc/kubernetes/super-admin.conf#path: /etc/kubernetes/admin.conf#"
	agentManifest    = "/etc/kubernetes/manifests/vip-agent.yaml"
)

// KubeadmBinaries are what the kubeadm lab runs from BinDir.
var KubeadmBinaries = []string{"kubeadm", "kubelet", "kubectl", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd"}

// kubeadmCommands are what it runs from PATH besides Commands.
var kubeadmCommands = []string{"unshare", "sleep", "sed", "mount", "ldd"}

// KubeadmDefaults fills cfg's defaults for the kubeadm lab (folder
// <repo>/_out/kubeadm, 3 control-plane nodes).
func KubeadmDefaults(cfg Config) (Config, error) {
	if cfg.RepoDir == "" {
		d, err := RepoDir()
		if err != nil {
			return cfg, err
		}
		cfg.RepoDir = d
	}
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join(cfg.RepoDir, "_out", "kubeadm")
	}
	return cfg.withDefaults()
}

// KubeadmCheck reports what the machine lacks for the kubeadm lab.
func KubeadmCheck(cfg Config) error {
	if err := cfg.Check(); err != nil {
		return err
	}
	var miss []string
	for _, b := range KubeadmBinaries {
		if _, err := os.Stat(filepath.Join(cfg.BinDir, b)); err != nil {
			miss = append(miss, filepath.Join(cfg.BinDir, b))
		}
	}
	for _, c := range kubeadmCommands {
		if _, err := exec.LookPath(c); err != nil {
			miss = append(miss, c)
		}
	}
	if len(miss) > 0 {
		return &MissingError{What: miss}
	}
	return nil
}

// KubeadmUp builds the images, the network (bridge, client namespace, one
// namespace per node) and the nodes, runs `kubeadm init` on the first and
// `kubeadm join --control-plane` on the others. On failure everything
// started is torn down again.
func KubeadmUp(ctx context.Context, cfg Config) (*KubeadmLab, error) {
	return KubeadmUpWith(ctx, cfg, KubeadmOptions{})
}

// KubeadmOptions change how KubeadmUp bootstraps.
type KubeadmOptions struct {
	// NoSuperAdmin leaves the first node's static Pod with admin.conf
	// while `kubeadm init` runs (a control run: what the super-admin.conf
	// step is for).
	NoSuperAdmin bool
}

// KubeadmUpWith is KubeadmUp with options.
func KubeadmUpWith(ctx context.Context, cfg Config, opts KubeadmOptions) (l *KubeadmLab, err error) {
	cfg, err = KubeadmDefaults(cfg)
	if err != nil {
		return nil, err
	}
	if err := KubeadmCheck(cfg); err != nil {
		return nil, err
	}
	for _, f := range []string{stateFile, kubeadmStateFile} {
		if _, err := os.Stat(filepath.Join(cfg.Dir, f)); err == nil {
			return nil, fmt.Errorf("%w: state in %s", ErrExists, cfg.Dir)
		}
	}
	// Nothing is made when a name the lab needs is taken (another lab's,
	// or a leftover): teardown then never touches it. The agents' state
	// files live in each node's own /run (a tmpfs), not on the host.
	claims, err := labClaims(kubeadmNamespaces(cfg.Nodes), kubeadmNodes(cfg.Nodes), nil)
	if err != nil {
		return nil, err
	}
	if err := checkFree(append(claims, folderClaim(cfg.Dir)...), pathExists); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	l = &KubeadmLab{cfg: cfg, opts: opts, st: &State{Dir: cfg.Dir, BinDir: cfg.BinDir, RepoDir: cfg.RepoDir},
		ks: &KubeadmState{Dir: cfg.Dir}}
	// The one mount point the nodes need on the host (the others exist).
	if _, err := os.Stat(kubeadmHostDir); errors.Is(err, os.ErrNotExist) {
		l.st.HostPaths = append(l.st.HostPaths, kubeadmHostDir)
	}
	if err := l.st.save(); err != nil {
		return nil, err
	}
	if err := l.ks.save(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			if derr := l.Down(); derr != nil {
				err = errors.Join(err, fmt.Errorf("teardown: %w", derr))
			}
			l = nil
		}
	}()
	t0 := time.Now()
	if err := l.prepare(); err != nil {
		return l, err
	}
	cfg.Logf("kubeadm: images built in %v", since(t0))
	if err := l.network(); err != nil {
		return l, err
	}
	for i := 1; i <= cfg.Nodes; i++ {
		if err := l.startNode(ctx, i); err != nil {
			return l, fmt.Errorf("node %s: %w", KubeadmNodeName(i), err)
		}
	}
	cfg.Logf("kubeadm: %d nodes with containerd and the images, %v in all", cfg.Nodes, since(t0))
	if err := l.initFirst(ctx); err != nil {
		return l, err
	}
	cfg.Logf("kubeadm: init on %s in %v", KubeadmNodeName(1), l.InitTime.Round(time.Millisecond))
	for i := 2; i <= cfg.Nodes; i++ {
		if err := l.join(ctx, i); err != nil {
			return l, err
		}
		cfg.Logf("kubeadm: %s joined as a control-plane node in %v", KubeadmNodeName(i), l.JoinTimes[i-2].Round(time.Millisecond))
	}
	return l, nil
}

// prepare picks versions and secrets, writes the init configuration and
// builds the images it needs.
func (l *KubeadmLab) prepare() (err error) {
	if l.kubeVer, err = kubeVersion(l.cfg.BinDir); err != nil {
		return err
	}
	if l.etcdVer, err = etcdVersion(l.cfg.BinDir); err != nil {
		return err
	}
	if l.token, err = newBootstrapToken(); err != nil {
		return err
	}
	if l.certKey, err = newCertificateKey(); err != nil {
		return err
	}
	n1 := KubeadmNode{Name: KubeadmNodeName(1), Dir: filepath.Join(l.cfg.Dir, KubeadmNodeName(1))}
	initCfg := filepath.Join(l.cfg.Dir, "kubeadm-init.yaml")
	if err := os.WriteFile(initCfg, []byte(initConfiguration(n1.Socket(), l.kubeVer, l.etcdVer, l.token, l.certKey)), 0o600); err != nil {
		return err
	}
	l.images, l.agent, l.pause, err = buildKubeadmImages(l.cfg.RepoDir, l.cfg.BinDir, initCfg, filepath.Join(l.cfg.Dir, "images"))
	return err
}

// network makes the bridge, the client namespace and the nodes' namespaces.
func (l *KubeadmLab) network() error {
	if err := l.st.buildKubeadmSwitch(); err != nil {
		return err
	}
	if err := l.st.addKubeadmMember(KubeadmClientNS, ClientIP); err != nil {
		return err
	}
	// Gratuitous ARP updates the client's neighbour entry when the VIP moves.
	if _, err := runIn(KubeadmClientNS, "sysctl", "-qw", "net.ipv4.conf.all.arp_accept=1"); err != nil {
		return err
	}
	for i := 1; i <= l.cfg.Nodes; i++ {
		if err := l.st.addKubeadmMember(KubeadmNodeName(i), KubeadmNodeIP(i)); err != nil {
			return err
		}
	}
	return os.MkdirAll(kubeadmHostDir, 0o755)
}

// startNode prepares node i: sysctls kubeadm's preflight wants, cgroup
// root, folders, containerd and CNI configuration, the mount namespace with
// its bind mounts, containerd with the images.
func (l *KubeadmLab) startNode(ctx context.Context, i int) error {
	name := KubeadmNodeName(i)
	n := KubeadmNode{Name: name, IP: KubeadmNodeIP(i), Dir: filepath.Join(l.cfg.Dir, name)}
	l.ks.mu.Lock()
	l.ks.Nodes = append(l.ks.Nodes, n)
	l.ks.mu.Unlock()
	if err := l.ks.save(); err != nil {
		return err
	}
	for _, kv := range []string{"net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1"} {
		if _, err := runIn(name, "sysctl", "-qw", kv); err != nil {
			return err
		}
	}
	if err := l.st.makeCgroup(name); err != nil {
		return err
	}
	for _, d := range []string{"state", "cni/net.d", "etc-kubernetes/manifests", "var-lib", "var-log"} {
		if err := os.MkdirAll(filepath.Join(n.Dir, d), 0o755); err != nil {
			return err
		}
	}
	r := []string{"{{D}}", n.Dir, "{{CIDR}}", fmt.Sprintf("10.244.%d.0/24", 100+i), "{{NET}}", cniNetwork,
		"{{PAUSE}}", l.pause, "{{CNIBIN}}", cniBinDir}
	for f, body := range map[string]string{
		"containerd.toml":           expand(containerdConfig, r...),
		"cni/net.d/10-vcl.conflist": expand(cniConfig, r...),
		"hosts":                     kubeadmHosts(l.cfg.Nodes),
	} {
		if err := os.WriteFile(filepath.Join(n.Dir, f), []byte(body), 0o644); err != nil {
			return err
		}
	}
	h, err := startHolder(n)
	n.Holder = h
	if uerr := l.ks.update(name, func(x *KubeadmNode) { x.Holder = h }); uerr != nil && err == nil {
		err = uerr
	}
	if err != nil {
		return err
	}
	for _, m := range kubeadmMounts {
		args := []string{"-t", "tmpfs", "-o", "mode=755", "tmpfs", m.target}
		if m.sub != "" {
			args = []string{"--bind", filepath.Join(n.Dir, m.sub), m.target}
		}
		if _, err := runInNode(ctx, n, "mount", args...); err != nil {
			return err
		}
	}
	p, err := startNodeContainerd(ctx, n)
	if uerr := l.ks.update(name, func(x *KubeadmNode) { x.Containerd = p }); uerr != nil && err == nil {
		err = uerr
	}
	if err != nil {
		return err
	}
	for _, img := range l.images {
		if _, err := run("ctr", "-a", n.Socket(), "-n", "k8s.io", "images", "import", img); err != nil {
			return err
		}
	}
	return nil
}

// GenerateManifest runs the lab image's vip-agent binary as a user runs
// kube-vip's generator for a kubeadm control plane, with the lab's
// interface, VIP and image.
func (l *KubeadmLab) GenerateManifest() (string, error) {
	l.GenerateArgs = []string{"manifest", "pod", "--interface", "eth0", "--address", KubeadmVIP,
		"--controlplane", "--arp", "--leaderElection", "--image", AgentImage}
	out, err := exec.Command(l.agent, l.GenerateArgs...).Output()
	if err != nil {
		return "", fmt.Errorf("vip-agent %s: %w", strings.Join(l.GenerateArgs, " "), err)
	}
	return string(out), nil
}

// initFirst saves the generated static Pod on the first node, swaps its
// kubeconfig for super-admin.conf as kube-vip documents for kubeadm 1.29+
// (admin.conf has no rights until init has bound its group), runs `kubeadm
// init --upload-certs` and swaps admin.conf back. kubeadm v1.37.2's init
// talks only to the local API server and binds the group as soon as it is
// up: the control run (NoSuperAdmin) succeeds without the swap.
func (l *KubeadmLab) initFirst(ctx context.Context) error {
	n, err := l.ks.node(KubeadmNodeName(1))
	if err != nil {
		return err
	}
	if l.Manifest, err = l.GenerateManifest(); err != nil {
		return err
	}
	if err := os.WriteFile(n.Host(agentManifest), []byte(l.Manifest), 0o600); err != nil {
		return err
	}
	if !l.opts.NoSuperAdmin {
		if _, err := runInNode(ctx, n, "sed", "-i", superAdminSed, agentManifest); err != nil {
			return err
		}
		b, err := os.ReadFile(n.Host(agentManifest))
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), "path: "+"/etc/kubernetes/super-admin.conf") {
			return fmt.Errorf("the super-admin.conf edit changed nothing in %s", agentManifest)
		}
	}
	// The node's own address is where kubeadm binds etcd and advertises
	// the API server: check the namespace before kubeadm does.
	if out, err := runInNode(ctx, n, "ip", "-o", "-4", "addr", "show", "dev", "eth0"); err != nil || !strings.Contains(out, " "+n.IP+"/") {
		return fmt.Errorf("%s has not its address %s on eth0 (%v): %s", n.Name, n.IP, err, out)
	}
	t0 := time.Now()
	if err := l.kubeadm(ctx, n.Name, "init", "--config", filepath.Join(l.cfg.Dir, "kubeadm-init.yaml"), "--upload-certs"); err != nil {
		return err
	}
	l.InitTime = time.Since(t0)
	if l.opts.NoSuperAdmin {
		return nil
	}
	_, err = runInNode(ctx, n, "sed", "-i", revertSuperAdmin, agentManifest)
	return err
}

// join makes node i a further control-plane node: the generated static Pod
// (admin.conf, unchanged) in its manifest folder, then `kubeadm join
// --control-plane` through the VIP.
func (l *KubeadmLab) join(ctx context.Context, i int) error {
	n1, err := l.ks.node(KubeadmNodeName(1))
	if err != nil {
		return err
	}
	n, err := l.ks.node(KubeadmNodeName(i))
	if err != nil {
		return err
	}
	hash, err := caCertHash(n1.Host("/etc/kubernetes/pki/ca.crt"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(n.Host(agentManifest), []byte(l.Manifest), 0o600); err != nil {
		return err
	}
	f := filepath.Join(n.Dir, "kubeadm-join.yaml")
	if err := os.WriteFile(f, []byte(joinConfiguration(i, n.Socket(), l.token, hash, l.certKey)), 0o600); err != nil {
		return err
	}
	t0 := time.Now()
	if err := l.kubeadm(ctx, n.Name, "join", "--config", f); err != nil {
		return err
	}
	l.JoinTimes = append(l.JoinTimes, time.Since(t0))
	return nil
}

// kubeadm runs bin/kubeadm on a node while kubeletWhenConfigured starts the
// node's kubelet once kubeadm has configured it; the output goes to
// kubeadm-<verb>.log in the node's folder.
func (l *KubeadmLab) kubeadm(ctx context.Context, name string, args ...string) error {
	n, err := l.ks.node(name)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	done := make(chan struct{})
	kubelet := make(chan error, 1)
	go func() {
		kubelet <- l.ks.kubeletWhenConfigured(ctx, name, filepath.Join(l.cfg.BinDir, "kubelet"), done)
	}()
	// The kubelet is installed (kubeadm's preflight runs `kubelet --version`).
	path := "PATH=" + l.cfg.BinDir + string(os.PathListSeparator) + os.Getenv("PATH")
	out, err := runInNodeEnv(ctx, n, []string{path}, filepath.Join(l.cfg.BinDir, "kubeadm"), append(args, "--v=1")...)
	close(done)
	kerr := <-kubelet
	if werr := os.WriteFile(filepath.Join(n.Dir, "kubeadm-"+args[0]+".log"), []byte(out), 0o644); werr != nil && err == nil {
		err = werr
	}
	if err != nil {
		n, _ = l.ks.node(name)
		return fmt.Errorf("kubeadm %s on %s: %w\nkubelet:\n%s", args[0], name, err, tail(n.Kubelet.Log, 15))
	}
	return kerr
}

// Node returns the state of a kubeadm node.
func (l *KubeadmLab) Node(name string) (KubeadmNode, error) { return l.ks.node(name) }

// Nodes lists the node names.
func (l *KubeadmLab) Nodes() []string {
	var names []string
	for i := 1; i <= l.cfg.Nodes; i++ {
		names = append(names, KubeadmNodeName(i))
	}
	return names
}

// State returns the lab's network and cgroup state (for checks after Down).
func (l *KubeadmLab) State() (*State, *KubeadmState) { return l.st, l.ks }

// AdminConfig is the admin.conf `kubeadm init`/`join` wrote on node, as a
// client dialing from the client namespace. Its server is the
// controlPlaneEndpoint: the VIP.
func (l *KubeadmLab) AdminConfig(node string) (*rest.Config, error) {
	n, err := l.ks.node(node)
	if err != nil {
		return nil, err
	}
	rc, err := clientcmd.BuildConfigFromFlags("", n.Host("/etc/kubernetes/admin.conf"))
	if err != nil {
		return nil, err
	}
	rc.Dial = dialerIn(KubeadmClientNS)
	rc.Timeout = 10 * time.Second
	return rc, nil
}

// Client is a clientset over AdminConfig(node).
func (l *KubeadmLab) Client(node string) (kubernetes.Interface, error) {
	rc, err := l.AdminConfig(node)
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(rc)
}

// ReadyzClient is an HTTP client with rc's credentials that opens a new
// connection from the client namespace for every request (so each request
// finds whoever answers for the VIP now).
func ReadyzClient(rc *rest.Config) (*http.Client, error) {
	tc, err := rest.TLSConfigFor(rc)
	if err != nil {
		return nil, err
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tc, DialContext: dialerIn(KubeadmClientNS), DisableKeepAlives: true}}, nil
}

// Readyz sends one GET <server>/readyz and returns nil on 200 OK.
func Readyz(ctx context.Context, hc *http.Client, server string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, server+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s/readyz: %s", server, resp.Status)
	}
	return nil
}

// Kubectl runs bin/kubectl in the client namespace with node's admin.conf
// (server: the VIP).
func (l *KubeadmLab) Kubectl(ctx context.Context, node string, args ...string) (string, error) {
	n, err := l.ks.node(node)
	if err != nil {
		return "", err
	}
	full := append([]string{"--net=" + netnsPath(KubeadmClientNS), "--", filepath.Join(l.cfg.BinDir, "kubectl"),
		"--kubeconfig", n.Host("/etc/kubernetes/admin.conf"), "--request-timeout=10s"}, args...)
	out, err := exec.CommandContext(ctx, "nsenter", full...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// VIPHolder is the holder of the control-plane Lease ("" if none).
func VIPHolder(ctx context.Context, cs kubernetes.Interface) (string, error) {
	le, err := cs.CoordinationV1().Leases(kubeadmLeaseNS).Get(ctx, kubeadmLease, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if le.Spec.HolderIdentity == nil {
		return "", nil
	}
	return *le.Spec.HolderIdentity, nil
}

// EtcdLeader returns the node whose etcd member leads (its
// etcd_server_is_leader metric, on kubeadm's 127.0.0.1:2381 in each node).
func (l *KubeadmLab) EtcdLeader(ctx context.Context) (string, error) {
	var errs []error
	for _, name := range l.Nodes() {
		hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: dialerIn(name)}}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:2381/metrics", nil)
		if err != nil {
			return "", err
		}
		resp, err := hc.Do(req)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if strings.Contains(string(b), "\netcd_server_is_leader 1\n") {
			return name, nil
		}
	}
	return "", fmt.Errorf("no etcd member says it leads: %w", errors.Join(errs...))
}

// KillNode kills node's kubelet and containerd (SIGKILL); its static Pods'
// processes keep running, cut off once its port is down (CutKubeadmPort).
func (l *KubeadmLab) KillNode(name string) error {
	n, err := l.ks.node(name)
	if err != nil {
		return err
	}
	return errors.Join(n.Kubelet.Signal(syscall.SIGKILL), n.Containerd.Signal(syscall.SIGKILL))
}

// Logs returns the last lines of every node's kubeadm, kubelet and
// containerd logs and of its static Pods' containers.
func (l *KubeadmLab) Logs(lines int) string {
	var b strings.Builder
	for _, n := range l.ks.Nodes {
		files := []string{filepath.Join(n.Dir, "kubeadm-init.log"), filepath.Join(n.Dir, "kubeadm-join.log"),
			n.Kubelet.Log, n.Containerd.Log}
		pods, _ := filepath.Glob(n.Host("/var/log/pods/*/*/*.log"))
		for _, f := range append(files, pods...) {
			if _, err := os.Stat(f); f == "" || err != nil {
				continue
			}
			fmt.Fprintf(&b, "---- %s %s\n%s\n", n.Name, f, tail(f, lines))
		}
	}
	return b.String()
}

// AgentLog returns the last lines of the vip-agent static Pod's log on node.
func (l *KubeadmLab) AgentLog(node string, lines int) string {
	n, err := l.ks.node(node)
	if err != nil {
		return err.Error()
	}
	logs, _ := filepath.Glob(n.Host("/var/log/pods/kube-system_vip-agent-" + node + "_*/vip-agent/*.log"))
	var b strings.Builder
	for _, f := range logs {
		fmt.Fprintf(&b, "---- %s\n%s\n", f, tail(f, lines))
	}
	return b.String()
}

// Down tears the lab down: the nodes (KubeadmState.downNodes), then the
// namespaces, cgroups, host folders made for the bind mounts and the lab
// folder (State.Down).
func (l *KubeadmLab) Down() error { return kubeadmDown(l.st, l.ks) }

// kubeadmDown stops the nodes, then State.Down removes the rest; the folder
// (with both state files) stays when anything failed, for a second try.
func kubeadmDown(st *State, ks *KubeadmState) error {
	return errors.Join(ks.downNodes(), st.Down())
}

// KubeadmDown tears down the kubeadm lab whose state is in dir (a run that
// ended without its cleanup); os.ErrNotExist when there is none.
func KubeadmDown(dir string) error {
	st, err := Load(dir)
	if err != nil {
		return err
	}
	ks := &KubeadmState{Dir: dir}
	if b, err := os.ReadFile(filepath.Join(dir, kubeadmStateFile)); err == nil {
		if err := json.Unmarshal(b, ks); err != nil {
			return err
		}
	}
	return kubeadmDown(st, ks)
}
