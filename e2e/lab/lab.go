// Package lab builds vip's end-to-end lab out of Linux network namespaces:
// one bridge (in its own namespace "sw"), an "api" namespace running a real
// etcd, kube-apiserver (pkg/testbed) and vip-ccm, N node namespaces each
// running the real vip-agent binary and a responder that answers with its
// node name, and a "client" namespace from which tests observe. Everything
// uses 10.X.0.0/16 and fd00:X::/64 with X picked per run in 64..127; no
// namespace gets a default route and nothing touches the root namespace's
// interfaces. It needs root.
//
// The programs run with exactly the ServiceAccounts and RBAC shipped in
// deploy/, so a missing rule fails the lab.
package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/vip-lb/vip/e2e/internal/responder"
	"github.com/vip-lb/vip/pkg/testbed"
)

func init() { responder.MaybeRun() }

// Options configure a lab. The zero value gives three nodes and defaults.
type Options struct {
	// Nodes is the number of node namespaces (default 3).
	Nodes int
	// BinDir holds vip-agent, vip-ccm, etcd and kube-apiserver (default:
	// testbed.DefaultBinDir(), i.e. $VIP_BIN_DIR or <repo>/bin).
	BinDir string
	// RepoDir is the repository root, for deploy/ (default: the folder
	// holding go.mod at or above the working directory).
	RepoDir string
	// Dir holds logs, kubeconfigs and state files (default: a new temporary
	// folder, removed by Close unless KeepDir or $VIP_LAB_KEEP=1, which
	// keeps every lab's folder for a post-mortem).
	Dir     string
	KeepDir bool
	// AgentArgs are appended to every vip-agent command line.
	AgentArgs []string
	// CCMArgs are appended to vip-ccm's command line.
	CCMArgs []string
	// Liveness is the agents' --liveness ("" = their default); "link"
	// also gives them a heartbeat key file.
	Liveness string
	// Pools are extra entries of the pools ConfigMap (values may use the
	// placeholder X for the lab's second octet, e.g. "10.X.8.0/24").
	Pools map[string]string
	// Namespaces are created besides default (for namespace pools).
	Namespaces []string
	// Logf receives progress messages (default: discarded).
	Logf func(format string, args ...any)
}

// Node is one node namespace.
type Node struct {
	Name   string     // node1 …
	NS     string     // network namespace
	Port   string     // its port on the bridge, in the sw namespace
	IP4    netip.Addr // 10.X.0.1N
	IP6    netip.Addr // fd00:X::1N
	MAC    string     // its eth0 MAC
	Agent  *Proc      // the real vip-agent
	Server *Proc      // the responder
	State  string     // the agent's --state-file
}

// Lab is a running lab. Its methods are safe for concurrent use unless
// stated otherwise.
type Lab struct {
	Opts   Options
	ID     string // Prefix + PID
	X      int    // second octet: 10.X.0.0/16, fd00:X::/64
	Dir    string
	Env    *testbed.Env
	Admin  kubernetes.Interface
	Nodes  []*Node
	CCM    *Proc
	Client string // client namespace
	SW     string // bridge namespace
	API    string // api namespace

	ClientIP4, ClientIP6 netip.Addr
	ClientMAC            string

	// lastAddr is the last address seen per Service key, to find the
	// address Lease of a deleted Service.
	lastAddr sync.Map

	mu     sync.Mutex
	procs  []*Proc
	nss    []string
	closed bool
}

// Well-known values.
const (
	// ServicePort is the port every responder listens on.
	ServicePort = 80
	// MetricsPort is the agents' metrics and health port.
	MetricsPort = 2112
	// LabServiceCIDRs are the lab API server's Service CIDRs.
	LabServiceCIDRs = "10.58.0.0/16,fd00:58:96::/112"
	// ScaleNamespace has its own large pool (10.X.4.0/22) for many Services.
	ScaleNamespace = "scale"
)

// EnvKeep set to 1 keeps every lab's folder (logs, kubeconfigs, state
// files) after Close, for a post-mortem.
const EnvKeep = "VIP_LAB_KEEP"

// New builds and starts a lab. On error everything already started is torn
// down. The caller must Close the lab.
func New(ctx context.Context, o Options) (l *Lab, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("lab: needs root (network namespaces)")
	}
	if o.Nodes <= 0 {
		o.Nodes = 3
	}
	if os.Getenv(EnvKeep) == "1" {
		o.KeepDir = true
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if o.BinDir == "" {
		if o.BinDir, err = testbed.DefaultBinDir(); err != nil {
			return nil, err
		}
	}
	if o.RepoDir == "" {
		if o.RepoDir, err = repoDir(); err != nil {
			return nil, err
		}
	}
	for _, b := range []string{"vip-agent", "vip-ccm", "etcd", "kube-apiserver"} {
		if st, err := os.Stat(filepath.Join(o.BinDir, b)); err != nil || st.Mode()&0o111 == 0 {
			return nil, fmt.Errorf("lab: %s missing in %s (run `make build bin/etcd bin/kube-apiserver`)", b, o.BinDir)
		}
	}
	if stale, err := CleanStale(); err != nil {
		o.Logf("lab: cleaning stale namespaces: %v", err)
	} else if len(stale) > 0 {
		o.Logf("lab: removed stale namespaces of crashed runs: %v", stale)
	}
	pid := os.Getpid()
	l = &Lab{Opts: o, ID: Prefix + strconv.Itoa(pid), X: 64 + pid%64}
	l.SW, l.API, l.Client = l.ID+"-sw", l.ID+"-api", l.ID+"-client"
	defer func() {
		if err != nil {
			if cerr := l.Close(); cerr != nil {
				err = errors.Join(err, cerr)
			}
			l = nil
		}
	}()
	if o.Dir == "" {
		if l.Dir, err = os.MkdirTemp("", l.ID+"-"); err != nil {
			return l, err
		}
	} else {
		l.Dir = o.Dir
		if err = os.MkdirAll(l.Dir, 0o755); err != nil {
			return l, err
		}
	}
	t0 := time.Now()
	if err = l.buildNetwork(); err != nil {
		return l, fmt.Errorf("lab: network: %w", err)
	}
	o.Logf("lab %s: network 10.%d.0.0/16 + fd00:%d::/64 ready in %v", l.ID, l.X, l.X, since(t0))

	env, err := testbed.StartProcess(ctx, testbed.Options{
		BinDir: o.BinDir, Netns: l.API, Address: l.IP4(1).String(), Dir: l.Dir, Logf: o.Logf,
		// Outside every lab's 10.X/16 and router segment (X in 64..127,
		// Y = X+128): the default 10.96.0.0/12 holds 10.96-111.x, where
		// vip-ccm (rightly) never hands out an address.
		ServiceCIDRs: LabServiceCIDRs,
	})
	if err != nil {
		return l, fmt.Errorf("lab: API server: %w", err)
	}
	l.Env = env
	l.Admin = env.AdminClient()
	if err = l.setupCluster(ctx); err != nil {
		return l, fmt.Errorf("lab: cluster objects: %w", err)
	}
	if err = l.startPrograms(ctx); err != nil {
		return l, err
	}
	o.Logf("lab %s: up in %v (dir %s)", l.ID, since(t0), l.Dir)
	return l, nil
}

func since(t time.Time) time.Duration { return time.Since(t).Round(time.Millisecond) }

// repoDir is the nearest folder at or above the working directory with a go.mod.
func repoDir() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("lab: no go.mod above %s", wd)
		}
	}
}

// IP4 is 10.X.0.host.
func (l *Lab) IP4(host int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(l.X), byte(host >> 8), byte(host)})
}

// IP6 is fd00:X::host (host written in decimal digits, read as hex).
func (l *Lab) IP6(host int) netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf("fd00:%d::%d", l.X, host))
}

// mac is the lab's MAC for host.
func (l *Lab) mac(host int) string {
	return fmt.Sprintf("02:00:0a:%02x:%02x:%02x", l.X, host>>8, host&0xff)
}

// Pool values of the kubevip ConfigMap.
func (l *Lab) pools() map[string]string {
	m := map[string]string{
		"cidr-global":            fmt.Sprintf("10.%d.0.200/29,fd00:%d::200/125", l.X, l.X),
		"cidr-" + ScaleNamespace: fmt.Sprintf("10.%d.4.0/22", l.X),
	}
	for k, v := range l.Opts.Pools {
		m[k] = strings.ReplaceAll(v, "X", strconv.Itoa(l.X))
	}
	return m
}

// GlobalPool4 is the IPv4 global pool.
func (l *Lab) GlobalPool4() netip.Prefix {
	return netip.MustParsePrefix(fmt.Sprintf("10.%d.0.200/29", l.X))
}

// buildNetwork makes the namespaces, the bridge and the veth legs.
func (l *Lab) buildNetwork() error {
	if err := l.addNS(l.SW); err != nil {
		return err
	}
	if _, err := ip("-n", l.SW, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0"); err != nil {
		return err
	}
	if _, err := ip("-n", l.SW, "link", "set", "br0", "up"); err != nil {
		return err
	}
	leg := func(role string, host int) (string, error) {
		ns := l.ID + "-" + role
		if err := l.addNS(ns); err != nil {
			return "", err
		}
		mac := l.mac(host)
		if _, err := ip("link", "add", "eth0", "netns", ns, "address", mac, "type", "veth",
			"peer", "name", "p-"+role, "netns", l.SW); err != nil {
			return "", err
		}
		if _, err := ip("-n", l.SW, "link", "set", "p-"+role, "master", "br0", "up"); err != nil {
			return "", err
		}
		for _, c := range [][]string{
			{"addr", "add", l.IP4(host).String() + "/16", "dev", "eth0"},
			{"addr", "add", l.IP6(host).String() + "/64", "dev", "eth0", "nodad"},
			{"link", "set", "eth0", "up"},
		} {
			if _, err := ip(append([]string{"-n", ns}, c...)...); err != nil {
				return "", err
			}
		}
		return mac, nil
	}
	if _, err := leg("api", 1); err != nil {
		return err
	}
	for i := 1; i <= l.Opts.Nodes; i++ {
		name := fmt.Sprintf("node%d", i)
		host := nodeHost(i)
		mac, err := leg(name, host)
		if err != nil {
			return err
		}
		l.Nodes = append(l.Nodes, &Node{
			Name: name, NS: l.ID + "-" + name, Port: "p-" + name,
			IP4: l.IP4(host), IP6: l.IP6(host), MAC: mac,
			State: filepath.Join(l.Dir, name+".json"),
		})
	}
	mac, err := leg("client", 100)
	if err != nil {
		return err
	}
	l.ClientMAC, l.ClientIP4, l.ClientIP6 = mac, l.IP4(100), l.IP6(100)
	// The client learns addresses from gratuitous ARP (LAB.md 2.1).
	return sysctls(l.Client, "net.ipv4.conf.eth0.arp_accept", "1")
}

// nodeHost is node i's host number: 10.X.0.1N up to node89, then
// 10.X.2.N (clear of the client at .100, the pools at .200 and 10.X.4/22).
func nodeHost(i int) int {
	if i < 90 {
		return 10 + i
	}
	return 512 + i
}

// addNS creates a namespace with loopback up and no IPv6 DAD (so link-local
// addresses, used by neighbour advertisements, are usable at once).
func (l *Lab) addNS(ns string) error {
	if _, err := ip("netns", "add", ns); err != nil {
		return err
	}
	l.mu.Lock()
	l.nss = append(l.nss, ns)
	l.mu.Unlock()
	if _, err := ip("-n", ns, "link", "set", "lo", "up"); err != nil {
		return err
	}
	return sysctls(ns, "net.ipv6.conf.all.accept_dad", "0", "net.ipv6.conf.default.accept_dad", "0")
}

// setupCluster applies RBAC, writes kubeconfigs and creates the pools
// ConfigMap, namespaces and Nodes.
func (l *Lab) setupCluster(ctx context.Context) error {
	for _, f := range []string{"deploy/agent/rbac.yaml", "deploy/ccm/rbac.yaml"} {
		if err := l.Env.ApplyFile(ctx, filepath.Join(l.Opts.RepoDir, f)); err != nil {
			return fmt.Errorf("applying %s: %w", f, err)
		}
	}
	for _, sa := range []string{"vip-agent", "vip-ccm"} {
		tok, err := l.Env.ServiceAccountToken(ctx, "kube-system", sa)
		if err != nil {
			return err
		}
		if err := l.Env.Kubeconfig(filepath.Join(l.Dir, sa+".kubeconfig"), tok); err != nil {
			return err
		}
	}
	if err := l.Env.Kubeconfig(filepath.Join(l.Dir, "admin.kubeconfig"), ""); err != nil {
		return err
	}
	cm := &v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "kubevip", Namespace: "kube-system"}, Data: l.pools()}
	if _, err := l.Admin.CoreV1().ConfigMaps("kube-system").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("pools ConfigMap: %w", err)
	}
	for _, ns := range append([]string{ScaleNamespace}, l.Opts.Namespaces...) {
		_, err := l.Admin.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	for _, n := range l.Nodes {
		node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: map[string]string{"kubernetes.io/hostname": n.Name}}}
		got, err := l.Admin.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		got.Status.Addresses = []v1.NodeAddress{
			{Type: v1.NodeInternalIP, Address: n.IP4.String()},
			{Type: v1.NodeInternalIP, Address: n.IP6.String()},
			{Type: v1.NodeHostName, Address: n.Name},
		}
		now := metav1.Now()
		got.Status.Conditions = []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionTrue,
			LastHeartbeatTime: now, LastTransitionTime: now, Reason: "KubeletReady", Message: "lab node"}}
		if _, err := l.Admin.CoreV1().Nodes().UpdateStatus(ctx, got, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("node %s status: %w", n.Name, err)
		}
	}
	return nil
}

// startPrograms starts vip-ccm, the responders and the agents, and waits
// until every agent is ready and sees every other one.
func (l *Lab) startPrograms(ctx context.Context) error {
	l.CCM = l.track(newProc("vip-ccm", l.API, filepath.Join(l.Dir, "vip-ccm.log"),
		filepath.Join(l.Opts.BinDir, "vip-ccm"), append([]string{
			"--kubeconfig", filepath.Join(l.Dir, "vip-ccm.kubeconfig"),
			"--secure-port=0", "--leader-elect=false", "--v=2",
		}, l.Opts.CCMArgs...), nil))
	if err := l.CCM.Start(); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	key := filepath.Join(l.Dir, "link.key")
	if err := os.WriteFile(key, []byte(l.ID+"-heartbeat-key-0123456789"), 0o600); err != nil {
		return err
	}
	for _, n := range l.Nodes {
		n.Server = l.track(newProc("responder "+n.Name, n.NS, filepath.Join(l.Dir, n.Name+"-responder.log"),
			self, nil, []string{responder.EnvName + "=" + n.Name}))
		if err := n.Server.Start(); err != nil {
			return err
		}
		args := []string{
			"--kubeconfig", filepath.Join(l.Dir, "vip-agent.kubeconfig"),
			"--arp", "--node-name", n.Name, "--interface", "eth0",
			"--state-file", n.State,
			"--metrics-address", fmt.Sprintf("%s:%d", n.IP4, MetricsPort),
		}
		if l.Opts.Liveness != "" {
			args = append(args, "--liveness="+l.Opts.Liveness)
		}
		if l.Opts.Liveness == "link" {
			args = append(args, "--link-key-file="+key)
		}
		n.Agent = l.track(newProc("vip-agent "+n.Name, n.NS, filepath.Join(l.Dir, n.Name+"-agent.log"),
			filepath.Join(l.Opts.BinDir, "vip-agent"), append(args, l.Opts.AgentArgs...), nil))
		if err := n.Agent.Start(); err != nil {
			return err
		}
		// A large lab starts in batches, each ready before the next, so
		// that a hundred agents listing at once do not starve the two
		// cores (and the API server) past the settle timeout.
		if i := slices.Index(l.Nodes, n); len(l.Nodes) > startBatch && (i+1)%startBatch == 0 {
			for _, m := range l.Nodes[i+1-startBatch : i+1] {
				if err := l.WaitAgentReady(ctx, m.Name); err != nil {
					return fmt.Errorf("starting agents in batches of %d: %w", startBatch, err)
				}
			}
		}
	}
	return l.WaitSettled(ctx, max(60*time.Second, time.Duration(len(l.Nodes))*2*time.Second))
}

func (l *Lab) track(p *Proc) *Proc {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.procs = append(l.procs, p)
	return p
}

// startBatch is how many agents a large lab starts before waiting for
// them to be ready.
const startBatch = 10

// Node returns the node called name (nil if none).
func (l *Lab) Node(name string) *Node {
	for _, n := range l.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// NodeByMAC returns the node whose eth0 has mac (nil if none).
func (l *Lab) NodeByMAC(mac string) *Node {
	for _, n := range l.Nodes {
		if strings.EqualFold(n.MAC, mac) {
			return n
		}
	}
	return nil
}

// Logs returns the tails of the agents' and vip-ccm's logs, for failures.
func (l *Lab) Logs(lines int) string {
	var b strings.Builder
	for _, n := range l.Nodes {
		if n.Agent != nil {
			fmt.Fprintf(&b, "---- %s (%s)\n%s\n", n.Agent.Name, n.Agent.Log, n.Agent.Tail(lines))
		}
	}
	if l.CCM != nil {
		fmt.Fprintf(&b, "---- vip-ccm (%s)\n%s\n", l.CCM.Log, l.CCM.Tail(lines))
	}
	return b.String()
}

// Close stops every program (by PID), the API server and etcd, deletes the
// namespaces and, unless KeepDir, the lab folder. It is idempotent.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	procs, nss := l.procs, l.nss
	l.mu.Unlock()
	var errs []error
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() { _ = p.Stop(syscall.SIGKILL, 30*time.Second) })
	}
	wg.Wait()
	if l.Env != nil {
		if err := l.Env.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	for i := len(nss) - 1; i >= 0; i-- {
		killNetnsPids(nss[i])
		if _, err := ip("netns", "del", nss[i]); err != nil {
			errs = append(errs, err)
		}
	}
	if l.Dir != "" && !l.Opts.KeepDir && l.Opts.Dir == "" {
		if err := os.RemoveAll(l.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
