//go:build e2e

package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/vip-lb/vip/e2e/internal/responder"
	"github.com/vip-lb/vip/pkg/testbed"
)

func init() { responder.MaybeRun() }

// The BGP lab: a bridge (namespace sw) joins an "api" namespace (etcd,
// kube-apiserver, vip-ccm), a "router" namespace running BIRD 2, and three
// node namespaces, each running the real vip-agent in BGP mode and a
// responder on port 80. Behind the router, on its own link, sits a client
// whose default route points at the router: it reaches Service addresses
// only through the routes the nodes advertise. Addresses:
//
//	bridge       10.X.0.0/24     fd00:X::/64      api .1, nodes .11-.13, router .254 (FRR .253)
//	client link  10.X.1.0/24     fd00:X:1::/64    router .1, client .100
//	pools        10.X.8.0/22     fd00:X:8::/120   advertised as /32 and /128 only
//
// X is 128 + pid%64, so this lab never overlaps the layer-2 lab (64..127).
// No namespace has a default route except the client.

const (
	labPrefix  = "vbgp"
	routerAS   = 64512
	nodeAS     = 64513
	md5Secret  = "lab-md5-s3cret"
	annPrefix  = "bgp.vip.test"
	community  = "64513:100"
	largeComm  = "64513:7:9"
	scaleNS    = "scale"
	sharedNS   = "shared"
	numNodes   = 3
	holdTime   = 9
	keepalive  = 3
	metricPort = 2112
)

type labNode struct {
	name, ns, port string
	ip4, ip6       netip.Addr
	state          string
	agent, server  *proc
}

type bgpLab struct {
	id, dir                        string
	x                              int
	sw, api, router, client, frrNS string
	env                            *testbed.Env
	admin                          kubernetes.Interface
	nodes                          []*labNode
	ccm, bird                      *proc
	birdSock                       string
	clientIP4, clientIP6           netip.Addr
	routerIP4, routerIP6           netip.Addr
	mu                             sync.Mutex
	procs                          []*proc
	nss                            []string
	routerNL                       *netlink.Handle
	routerNS                       netns.NsHandle
	logf                           func(string, ...any)
}

func (l *bgpLab) ip4(third, host int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(l.x), byte(third), byte(host)})
}

func (l *bgpLab) ip6(seg string, host int) netip.Addr {
	if seg != "" {
		seg = ":" + seg
	}
	return netip.MustParseAddr(fmt.Sprintf("fd00:%d%s::%d", l.x, seg, host))
}

// pool4 and pool6 are the Service pools.
func (l *bgpLab) pool4() netip.Prefix { return netip.PrefixFrom(l.ip4(8, 0), 22) }
func (l *bgpLab) pool6() netip.Prefix { return netip.PrefixFrom(l.ip6("8", 0), 120) }

func (l *bgpLab) track(p *proc) *proc {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.procs = append(l.procs, p)
	return p
}

func (l *bgpLab) addNS(role string) (string, error) {
	ns := l.id + "-" + role
	if err := ipc("netns", "add", ns); err != nil {
		return "", err
	}
	l.mu.Lock()
	l.nss = append(l.nss, ns)
	l.mu.Unlock()
	if err := ipc("-n", ns, "link", "set", "lo", "up"); err != nil {
		return "", err
	}
	return ns, sysctl(ns, "net.ipv6.conf.all.accept_dad", "0", "net.ipv6.conf.default.accept_dad", "0")
}

// leg attaches a namespace to the bridge with host number host.
func (l *bgpLab) leg(role string, host int) (string, error) {
	ns, err := l.addNS(role)
	if err != nil {
		return "", err
	}
	port := "p-" + role
	for _, c := range [][]string{
		{"link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns", l.sw},
		{"-n", l.sw, "link", "set", port, "master", "br0", "up"},
		{"-n", ns, "addr", "add", l.ip4(0, host).String() + "/24", "dev", "eth0"},
		{"-n", ns, "addr", "add", l.ip6("", host).String() + "/64", "dev", "eth0", "nodad"},
		{"-n", ns, "link", "set", "eth0", "up"},
	} {
		if err := ipc(c...); err != nil {
			return "", err
		}
	}
	return ns, nil
}

// staleLabs removes namespaces of earlier runs whose process is gone.
func staleLabs() {
	out, err := run("ip", "netns", "list")
	if err != nil {
		return
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], labPrefix) {
			continue
		}
		pidStr, _, _ := strings.Cut(strings.TrimPrefix(f[0], labPrefix), "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() || unix.Kill(pid, 0) == nil {
			continue
		}
		if pids, err := run("ip", "netns", "pids", f[0]); err == nil {
			for _, p := range strings.Fields(pids) {
				if n, err := strconv.Atoi(p); err == nil {
					_ = unix.Kill(n, unix.SIGKILL)
				}
			}
		}
		_ = ipc("netns", "del", f[0])
	}
}

// newLab builds the network, starts the API server, vip-ccm, BIRD, the
// responders and the agents, and waits until every agent has both sessions.
func newLab(ctx context.Context, logf func(string, ...any)) (l *bgpLab, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("needs root")
	}
	for _, b := range []string{"bird", "birdc"} {
		if _, err := exec.LookPath(b); err != nil {
			return nil, fmt.Errorf("%s not installed (apt-get install bird2)", b)
		}
	}
	binDir, err := testbed.DefaultBinDir()
	if err != nil {
		return nil, err
	}
	for _, b := range []string{"vip-agent", "vip-ccm", "etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(binDir, b)); err != nil {
			return nil, fmt.Errorf("%s missing in %s (make build bin/etcd bin/kube-apiserver)", b, binDir)
		}
	}
	staleLabs()
	pid := os.Getpid()
	l = &bgpLab{id: labPrefix + strconv.Itoa(pid), x: 128 + pid%64, logf: logf}
	defer func() {
		if err != nil {
			l.close()
			l = nil
		}
	}()
	if l.dir, err = os.MkdirTemp("", l.id+"-"); err != nil {
		return l, err
	}
	if err = os.Chmod(l.dir, 0o755); err != nil {
		return l, err
	}
	t0 := time.Now()
	if err = l.buildNetwork(); err != nil {
		return l, fmt.Errorf("network: %w", err)
	}
	logf("bgp lab %s: network 10.%d.0.0/16 ready in %v", l.id, l.x, time.Since(t0).Round(time.Millisecond))
	if l.env, err = testbed.StartProcess(ctx, testbed.Options{BinDir: binDir, Netns: l.api, Address: l.ip4(0, 1).String(), Dir: l.dir, Logf: logf}); err != nil {
		return l, fmt.Errorf("API server: %w", err)
	}
	l.admin = l.env.AdminClient()
	if err = l.setupCluster(ctx, binDir); err != nil {
		return l, err
	}
	if err = l.startBIRD(); err != nil {
		return l, err
	}
	for _, n := range l.nodes {
		if err = n.server.start(); err != nil {
			return l, err
		}
		if err = n.agent.start(); err != nil {
			return l, err
		}
	}
	if err = l.waitSessions(ctx, 60*time.Second); err != nil {
		return l, err
	}
	logf("bgp lab %s: up in %v (dir %s)", l.id, time.Since(t0).Round(time.Millisecond), l.dir)
	return l, nil
}

func (l *bgpLab) buildNetwork() error {
	var err error
	if l.sw, err = l.addNS("sw"); err != nil {
		return err
	}
	if err := ipc("-n", l.sw, "link", "add", "br0", "type", "bridge"); err != nil {
		return err
	}
	if err := ipc("-n", l.sw, "link", "set", "br0", "up"); err != nil {
		return err
	}
	if l.api, err = l.leg("api", 1); err != nil {
		return err
	}
	if l.router, err = l.leg("router", 254); err != nil {
		return err
	}
	l.routerIP4, l.routerIP6 = l.ip4(0, 254), l.ip6("", 254)
	if l.client, err = l.addNS("client"); err != nil {
		return err
	}
	l.clientIP4, l.clientIP6 = l.ip4(1, 100), l.ip6("1", 100)
	for _, c := range [][]string{
		{"link", "add", "eth1", "netns", l.router, "type", "veth", "peer", "name", "eth0", "netns", l.client},
		{"-n", l.router, "addr", "add", l.ip4(1, 1).String() + "/24", "dev", "eth1"},
		{"-n", l.router, "addr", "add", l.ip6("1", 1).String() + "/64", "dev", "eth1", "nodad"},
		{"-n", l.router, "link", "set", "eth1", "up"},
		{"-n", l.client, "addr", "add", l.clientIP4.String() + "/24", "dev", "eth0"},
		{"-n", l.client, "addr", "add", l.clientIP6.String() + "/64", "dev", "eth0", "nodad"},
		{"-n", l.client, "link", "set", "eth0", "up"},
		// The one default route of the lab: the client behind the router.
		{"-n", l.client, "route", "add", "default", "via", l.ip4(1, 1).String()},
		{"-n", l.client, "-6", "route", "add", "default", "via", l.ip6("1", 1).String()},
	} {
		if err := ipc(c...); err != nil {
			return err
		}
	}
	// The router forwards and spreads flows over ECMP next hops by ports.
	if err := sysctl(l.router, "net.ipv4.ip_forward", "1", "net.ipv6.conf.all.forwarding", "1",
		"net.ipv4.fib_multipath_hash_policy", "1", "net.ipv6.fib_multipath_hash_policy", "1"); err != nil {
		return err
	}
	if l.routerNS, err = netns.GetFromName(l.router); err != nil {
		return err
	}
	if l.routerNL, err = netlink.NewHandleAt(l.routerNS); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	secret := filepath.Join(l.dir, "bgp-secret")
	if err := os.MkdirAll(secret, 0o700); err != nil {
		return err
	}
	// A mounted Secret: one file per peer; only the IPv4 session is signed.
	if err := os.WriteFile(filepath.Join(secret, l.routerIP4.String()), []byte(md5Secret+"\n"), 0o600); err != nil {
		return err
	}
	for i := 1; i <= numNodes; i++ {
		name := fmt.Sprintf("node%d", i)
		ns, err := l.leg(name, 10+i)
		if err != nil {
			return err
		}
		n := &labNode{name: name, ns: ns, port: "p-" + name, ip4: l.ip4(0, 10+i), ip6: l.ip6("", 10+i),
			state: filepath.Join(l.dir, name+".json")}
		// Replies to the client go back through the router; the VIPs on lo
		// must not be answered for by ARP on eth0.
		for _, c := range [][]string{
			{"-n", ns, "route", "add", l.ip4(1, 0).String() + "/24", "via", l.routerIP4.String()},
			{"-n", ns, "-6", "route", "add", l.ip6("1", 0).String() + "/64", "via", l.routerIP6.String()},
		} {
			if err := ipc(c...); err != nil {
				return err
			}
		}
		if err := sysctl(ns, "net.ipv4.conf.all.arp_ignore", "1", "net.ipv4.conf.all.arp_announce", "2"); err != nil {
			return err
		}
		n.server = l.track(&proc{name: "responder " + name, ns: ns, log: filepath.Join(l.dir, name+"-responder.log"),
			bin: self, env: []string{responder.EnvName + "=" + name}})
		n.agent = l.track(&proc{name: "vip-agent " + name, ns: ns, log: filepath.Join(l.dir, name+"-agent.log"),
			bin: "", args: nil})
		l.nodes = append(l.nodes, n)
	}
	return nil
}

func (l *bgpLab) setupCluster(ctx context.Context, binDir string) error {
	repo := filepath.Dir(filepath.Dir(binDir))
	if _, err := os.Stat(filepath.Join(repo, "deploy")); err != nil {
		wd, _ := os.Getwd()
		repo = filepath.Dir(filepath.Dir(wd))
	}
	for _, f := range []string{"deploy/agent/rbac.yaml", "deploy/ccm/rbac.yaml"} {
		if err := l.env.ApplyFile(ctx, filepath.Join(repo, f)); err != nil {
			return fmt.Errorf("applying %s: %w", f, err)
		}
	}
	for _, sa := range []string{"vip-agent", "vip-ccm"} {
		tok, err := l.env.ServiceAccountToken(ctx, "kube-system", sa)
		if err != nil {
			return err
		}
		if err := l.env.Kubeconfig(filepath.Join(l.dir, sa+".kubeconfig"), tok); err != nil {
			return err
		}
	}
	cm := &v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "kubevip", Namespace: "kube-system"}, Data: map[string]string{
		"cidr-global": l.pool4().String() + "," + l.pool6().String(),
		// Services of sharedNS may share an address (TestSharedAddress).
		"allow-share-" + sharedNS: "true",
	}}
	if _, err := l.admin.CoreV1().ConfigMaps("kube-system").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		return err
	}
	for _, ns := range []string{scaleNS, sharedNS} {
		if _, err := l.admin.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	for _, n := range l.nodes {
		node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.name, Labels: map[string]string{"kubernetes.io/hostname": n.name}}}
		got, err := l.admin.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		now := metav1.Now()
		got.Status.Addresses = []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: n.ip4.String()},
			{Type: v1.NodeInternalIP, Address: n.ip6.String()}, {Type: v1.NodeHostName, Address: n.name}}
		got.Status.Conditions = []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionTrue,
			LastHeartbeatTime: now, LastTransitionTime: now, Reason: "KubeletReady"}}
		if _, err := l.admin.CoreV1().Nodes().UpdateStatus(ctx, got, metav1.UpdateOptions{}); err != nil {
			return err
		}
		n.agent.bin = filepath.Join(binDir, "vip-agent")
		n.agent.args = []string{
			"--bgp", "--node-name", n.name, "--kubeconfig", filepath.Join(l.dir, "vip-agent.kubeconfig"),
			"--state-file", n.state, "--metrics-address", netip.AddrPortFrom(n.ip4, metricPort).String(),
			"--bgpRouterID", n.ip4.String(), "--sourceIP", n.ip4.String(), "--localAS", strconv.Itoa(nodeAS),
			"--bgppeers", fmt.Sprintf("%s:%d,[%s]:%d", l.routerIP4, routerAS, l.routerIP6, routerAS),
			"--bgp-password-file", filepath.Join(l.dir, "bgp-secret"),
			"--bgp-hold-time", strconv.Itoa(holdTime), "--bgp-keepalive-interval", strconv.Itoa(keepalive),
			"--bgp-connect-retry", "1", "--bgp-communities", community, "--bgp-large-communities", largeComm,
			"--annotations", annPrefix, "--v=1",
		}
	}
	l.ccm = l.track(&proc{name: "vip-ccm", ns: l.api, log: filepath.Join(l.dir, "vip-ccm.log"), bin: filepath.Join(binDir, "vip-ccm"),
		args: []string{"--kubeconfig", filepath.Join(l.dir, "vip-ccm.kubeconfig"), "--secure-port=0", "--leader-elect=false", "--v=2"}})
	return l.ccm.start()
}

// birdConf is the router's configuration: one IPv4 (MD5-signed) and one
// IPv6 session per node, learned routes into the kernel with ECMP.
func (l *bgpLab) birdConf() string {
	var b strings.Builder
	fmt.Fprintf(&b, `log "%s/bird.log" all;
router id %s;
protocol device { scan time 10; }
protocol kernel k4 { ipv4 { import none; export all; }; merge paths yes; }
protocol kernel k6 { ipv6 { import none; export all; }; merge paths yes; }
template bgp n4 {
  local %s as %d;
  hold time %d; keepalive time %d; connect retry time 1;
  error wait time 1, 5;
  password "%s";
  ipv4 { import all; export none; };
}
template bgp n6 {
  local %s as %d;
  hold time %d; keepalive time %d; connect retry time 1;
  error wait time 1, 5;
  ipv6 { import all; export none; };
}
`, l.dir, l.routerIP4, l.routerIP4, routerAS, holdTime, keepalive, md5Secret, l.routerIP6, routerAS, holdTime, keepalive)
	for _, n := range l.nodes {
		fmt.Fprintf(&b, "protocol bgp %s from n4 { neighbor %s as %d; }\n", n.name, n.ip4, nodeAS)
		fmt.Fprintf(&b, "protocol bgp %s_6 from n6 { neighbor %s as %d; }\n", n.name, n.ip6, nodeAS)
	}
	return b.String()
}

func (l *bgpLab) startBIRD() error {
	conf := filepath.Join(l.dir, "bird.conf")
	if err := os.WriteFile(conf, []byte(l.birdConf()), 0o644); err != nil {
		return err
	}
	l.birdSock = filepath.Join(l.dir, "bird.ctl")
	if l.bird == nil {
		l.bird = l.track(&proc{name: "bird", ns: l.router, log: filepath.Join(l.dir, "bird.out"), bin: "bird",
			args: []string{"-f", "-c", conf, "-s", l.birdSock, "-P", filepath.Join(l.dir, "bird.pid")}})
	}
	if err := l.bird.start(); err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := l.birdc("show", "status"); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("BIRD did not start:\n%s", tail(l.bird.log, 20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (l *bgpLab) birdc(args ...string) (string, error) {
	return run("birdc", append([]string{"-s", l.birdSock}, args...)...)
}

// established returns BIRD's established BGP protocols.
func (l *bgpLab) established() (map[string]bool, error) {
	out, err := l.birdc("show", "protocols")
	if err != nil {
		return nil, err
	}
	up := map[string]bool{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 6 && f[1] == "BGP" && f[5] == "Established" {
			up[f[0]] = true
		}
	}
	return up, nil
}

// waitSessions waits until BIRD has both sessions with every running agent.
func (l *bgpLab) waitSessions(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last map[string]bool
	for {
		up, err := l.established()
		if err == nil {
			ok := true
			for _, n := range l.nodes {
				if n.agent.running() && (!up[n.name] || !up[n.name+"_6"]) {
					ok = false
				}
			}
			if ok {
				return nil
			}
			last = up
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("BGP sessions not established (up: %v): %w\n%s", last, ctx.Err(), l.logs(15))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (l *bgpLab) logs(n int) string {
	var b strings.Builder
	for _, nd := range l.nodes {
		fmt.Fprintf(&b, "---- %s\n%s\n", nd.agent.name, tail(nd.agent.log, n))
	}
	fmt.Fprintf(&b, "---- vip-ccm\n%s\n---- bird\n%s\n", tail(l.ccm.log, n), tail(filepath.Join(l.dir, "bird.log"), n))
	return b.String()
}

func (l *bgpLab) close() {
	l.mu.Lock()
	procs, nss := l.procs, l.nss
	l.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() { defer wg.Done(); p.stop(syscall.SIGKILL, 10*time.Second) }()
	}
	wg.Wait()
	if l.env != nil {
		_ = l.env.Stop()
	}
	if l.routerNL != nil {
		l.routerNL.Close()
		l.routerNS.Close()
	}
	for i := len(nss) - 1; i >= 0; i-- {
		if pids, err := run("ip", "netns", "pids", nss[i]); err == nil {
			for _, p := range strings.Fields(pids) {
				if n, err := strconv.Atoi(p); err == nil {
					_ = unix.Kill(n, unix.SIGKILL)
				}
			}
		}
		_ = ipc("netns", "del", nss[i])
	}
	if l.dir != "" && os.Getenv("VIP_E2E_KEEP") != "1" {
		_ = os.RemoveAll(l.dir)
	}
}
