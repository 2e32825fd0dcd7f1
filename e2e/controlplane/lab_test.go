//go:build e2e

// Package controlplane is the end-to-end test of the control-plane VIP: an
// HA control plane in network namespaces (three kube-apiservers on one
// etcd), vip-agent in control-plane mode next to each, and a client that
// talks to https://VIP:6443 all the time.
package controlplane

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"

	corev1 "k8s.io/api/core/v1"

	"github.com/vip-lb/vip/pkg/testbed"
)

// prefix starts every namespace this package creates, then the PID of the
// test process, so namespaces of crashed runs are recognised and removed.
const prefix = "vcp"

var nsPattern = regexp.MustCompile(`^` + prefix + `(\d+)-[a-z0-9]+$`)

// apiPort is where every kube-apiserver listens (each in its own namespace).
const apiPort = 6443

// cpNode is one control-plane node namespace.
type cpNode struct {
	name, ns, port string // port: its bridge port in the sw namespace
	ip             netip.Addr
	apiserver      *proc
	agent          *proc
}

// cluster is the whole lab.
type cluster struct {
	t        testing.TB
	id       string
	x        int
	dir      string
	bin      string
	sw, etcd string // namespaces
	client   string
	vip      netip.Addr
	nodes    []*cpNode
	etcdProc *proc
	token    string
	caPEM    []byte
	nss      []string
	procs    []*proc
	http     *http.Client // from the client namespace
	vipIface string       // where the holder binds the VIP: eth0 (ARP) or lo (BGP)
	router   *bgpRouter   // BGP mode only (bgp_test.go)
}

// labOptions choose how the agents run.
type labOptions struct {
	// services adds --services: the agents also serve LoadBalancer
	// Services, through the VIP as kubeadm's admin.conf would have them.
	services bool
	// bgp runs the agents with --bgp against a BIRD router on the bridge,
	// which the client reaches the VIP through (bgp_test.go).
	bgp bool
	// annotations (BGP) takes each node's AS, router ID and peer from
	// Node annotations under this prefix instead of the manifest's flags.
	annotations string
	// incomplete names a node whose annotations lack the peer address.
	incomplete string
	// everyNode (BGP) leaves --leaderElection out: every node whose API
	// server is ready advertises the VIP.
	everyNode bool
}

func (c *cluster) ip4(host int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(c.x), 0, byte(host)})
}

// newCluster builds the ARP-mode lab (see newLab).
func newCluster(t testing.TB, services bool) *cluster {
	t.Helper()
	return newLab(t, labOptions{services: services})
}

// newLab builds the lab: namespaces and bridge, certificates, etcd, three
// API servers, and an agent per node run with the environment of the
// static Pod `vip-agent manifest pod` prints.
func newLab(t testing.TB, o labOptions) *cluster {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	bin, err := testbed.DefaultBinDir()
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			if os.Getenv(testbed.EnvRequireAPIServer) == "1" {
				t.Fatalf("%s missing in %s (make bin/etcd bin/kube-apiserver)", b, bin)
			}
			t.Skipf("%s missing in %s (make bin/etcd bin/kube-apiserver)", b, bin)
		}
	}
	cleanStale(t)
	pid := os.Getpid()
	dir, err := os.MkdirTemp("", prefix+"-lab-")
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, id: prefix + strconv.Itoa(pid), x: 128 + pid%64, bin: bin, dir: dir}
	c.sw, c.etcd, c.client = c.id+"-sw", c.id+"-etcd", c.id+"-client"
	c.vip, c.vipIface = c.ip4(50), "eth0"
	if o.bgp {
		// Off the bridge's subnet: reachable only through BGP routes.
		c.vip, c.vipIface = netip.AddrFrom4([4]byte{10, byte(c.x), 1, 50}), "lo"
	}
	t.Cleanup(func() {
		c.close()
		if t.Failed() {
			t.Logf("logs kept in %s", dir)
			return
		}
		_ = os.RemoveAll(dir)
	})
	agentBin := filepath.Join(c.dir, "vip-agent")
	build := exec.Command("go", "build", "-o", agentBin, "./cmd/vip-agent")
	build.Dir = repoDir(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building vip-agent: %v\n%s", err, out)
	}
	t0 := time.Now()
	c.network()
	if o.bgp {
		c.bgpNetwork()
	}
	c.secrets()
	c.startEtcd()
	var wg sync.WaitGroup
	errs := make([]error, len(c.nodes))
	for i, n := range c.nodes {
		n.apiserver = c.apiserverProc(n)
		wg.Go(func() { errs[i] = c.startAPIServer(n) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if o.bgp {
		c.startRouter(o)
	}
	for _, n := range c.nodes {
		env := c.manifestEnv(agentBin, c.manifestArgs(o, n))
		n.agent = c.track(&proc{
			name: "vip-agent " + n.name, ns: n.ns, log: filepath.Join(c.dir, n.name+"-agent.log"), bin: agentBin,
			args: []string{"--v=2"},
			env:  append(env, "vip_nodename="+n.name, "prometheus_server="+netip.AddrPortFrom(n.ip, 2112).String()),
		})
		n.agent.args = append(n.agent.args, "--state-file", filepath.Join(c.dir, n.name+".json"))
		if err := n.agent.start(); err != nil {
			t.Fatal(err)
		}
	}
	c.http = c.clientHTTP()
	t.Logf("control-plane lab %s (10.%d.0.0/24, VIP %s) up in %v, logs in %s", c.id, c.x, c.vip, time.Since(t0).Round(time.Millisecond), c.dir)
	return c
}

// manifestArgs are the generator's arguments for node n, as an operator
// would run them on that node.
func (c *cluster) manifestArgs(o labOptions, n *cpNode) []string {
	args := []string{"manifest", "pod", "--controlplane", "--address", c.vip.String()}
	if !o.everyNode {
		args = append(args, "--leaderElection")
	}
	if o.bgp {
		args = append(args, c.bgpManifestArgs(o, n)...)
	} else {
		args = append(args, "--arp", "--interface", "eth0")
	}
	if o.services {
		args = append(args, "--services")
	}
	return args
}

// manifestEnv is the container environment of the static Pod the
// generator prints for args, with the node-specific values left out.
func (c *cluster) manifestEnv(agentBin string, args []string) []string {
	out, err := exec.Command(agentBin, args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			c.t.Fatalf("vip-agent %s: %v: %s", strings.Join(args, " "), err, ee.Stderr)
		}
		c.t.Fatalf("vip-agent %s: %v", strings.Join(args, " "), err)
	}
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(out, &pod); err != nil {
		c.t.Fatalf("generated manifest: %v", err)
	}
	kubeconfig := filepath.Join(c.dir, "admin.conf")
	var env []string
	for _, e := range pod.Spec.Containers[0].Env {
		switch {
		case e.ValueFrom != nil: // vip_nodename from spec.nodeName: set per node
		case e.Name == "prometheus_server":
		case e.Name == "k8s_config_file":
			env = append(env, e.Name+"="+kubeconfig) // the mounted /etc/kubernetes/admin.conf
		default:
			env = append(env, e.Name+"="+e.Value)
		}
	}
	return env
}

func repoDir(t testing.TB) string {
	wd, _ := os.Getwd()
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		if filepath.Dir(dir) == dir {
			t.Fatal("no go.mod above the working directory")
		}
	}
}

func (c *cluster) track(p *proc) *proc {
	c.procs = append(c.procs, p)
	return p
}

func ipCmd(args ...string) (string, error) {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

func (c *cluster) must(args ...string) {
	c.t.Helper()
	if _, err := ipCmd(args...); err != nil {
		c.t.Fatal(err)
	}
}

func (c *cluster) addNS(ns string) {
	c.must("netns", "add", ns)
	c.nss = append(c.nss, ns)
	c.must("-n", ns, "link", "set", "lo", "up")
}

// leg adds namespace <id>-role with eth0 on the bridge at 10.X.0.host.
func (c *cluster) leg(role string, host int) string {
	ns := c.id + "-" + role
	c.addNS(ns)
	mac := fmt.Sprintf("02:00:0a:%02x:00:%02x", c.x, host)
	c.must("link", "add", "eth0", "netns", ns, "address", mac, "type", "veth", "peer", "name", "p-"+role, "netns", c.sw)
	c.must("-n", c.sw, "link", "set", "p-"+role, "master", "br0", "up")
	c.must("-n", ns, "addr", "add", c.ip4(host).String()+"/24", "dev", "eth0")
	c.must("-n", ns, "link", "set", "eth0", "up")
	return ns
}

// network makes the bridge and one leg per namespace; no default routes.
func (c *cluster) network() {
	c.addNS(c.sw)
	c.must("-n", c.sw, "link", "add", "br0", "type", "bridge")
	c.must("-n", c.sw, "link", "set", "br0", "up")
	leg := c.leg
	leg("etcd", 1)
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("cp%d", i)
		ns := leg(name, 10+i)
		c.nodes = append(c.nodes, &cpNode{name: name, ns: ns, port: "p-" + name, ip: c.ip4(10 + i)})
	}
	leg("client", 100)
	// The client learns the VIP's new owner from gratuitous ARP.
	if err := testbed.InNetns(c.client, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/conf/eth0/arp_accept", []byte("1"), 0o644)
	}); err != nil {
		c.t.Fatal(err)
	}
}

// secrets writes a CA, the API servers' serving certificate (valid for
// every node, the VIP, loopback and the in-cluster names), the admin token
// and the service-account key pair, and the admin kubeconfig whose server
// is the VIP (as kubeadm's admin.conf).
func (c *cluster) secrets() {
	tok := make([]byte, 16)
	_, _ = rand.Read(tok)
	c.token = hex.EncodeToString(tok)
	write := func(name string, data []byte) string {
		p := filepath.Join(c.dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			c.t.Fatal(err)
		}
		return p
	}
	write("tokens.csv", []byte(c.token+",admin,admin,system:masters\n"))
	sa, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		c.t.Fatal(err)
	}
	pub, _ := x509.MarshalPKIXPublicKey(&sa.PublicKey)
	write("sa.key", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(sa)}))
	write("sa.pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))

	now := time.Now()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "vip-e2e-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		c.t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	ips := []net.IP{c.vip.AsSlice(), net.IPv4(127, 0, 0, 1), net.IPv4(10, 96, 0, 1)}
	for _, n := range c.nodes {
		ips = append(ips, n.ip.AsSlice())
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		IPAddresses: ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		c.t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	c.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	write("ca.crt", c.caPEM)
	write("apiserver.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	write("apiserver.key", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))

	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["lab"] = &clientcmdapi.Cluster{Server: "https://" + netip.AddrPortFrom(c.vip, apiPort).String(), CertificateAuthorityData: c.caPEM}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: c.token}
	cfg.Contexts["lab"] = &clientcmdapi.Context{Cluster: "lab", AuthInfo: "admin"}
	cfg.CurrentContext = "lab"
	if err := clientcmd.WriteToFile(*cfg, filepath.Join(c.dir, "admin.conf")); err != nil {
		c.t.Fatal(err)
	}
}

func (c *cluster) etcdURL() string { return "http://" + netip.AddrPortFrom(c.ip4(1), 2379).String() }

func (c *cluster) startEtcd() {
	peer := "http://" + netip.AddrPortFrom(c.ip4(1), 2380).String()
	c.etcdProc = c.track(&proc{
		name: "etcd", ns: c.etcd, log: filepath.Join(c.dir, "etcd.log"), bin: filepath.Join(c.bin, "etcd"),
		args: []string{"--name", "lab", "--data-dir", filepath.Join(c.dir, "etcd"),
			"--listen-client-urls", c.etcdURL(), "--advertise-client-urls", c.etcdURL(),
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "lab=" + peer,
			"--unsafe-no-fsync", "--log-level", "warn"},
	})
	if err := c.etcdProc.start(); err != nil {
		c.t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: testbed.DialerIn(c.etcd)}, Timeout: 2 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := hc.Get(c.etcdURL() + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) || !c.etcdProc.running() {
			c.t.Fatalf("etcd not ready: %v\n%s", err, c.etcdProc.tail(20))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *cluster) apiserverProc(n *cpNode) *proc {
	f := func(name string) string { return filepath.Join(c.dir, name) }
	return c.track(&proc{
		name: "kube-apiserver " + n.name, ns: n.ns, log: f(n.name + "-apiserver.log"), bin: filepath.Join(c.bin, "kube-apiserver"),
		args: []string{
			"--etcd-servers", c.etcdURL(), "--bind-address", "0.0.0.0", "--advertise-address", n.ip.String(),
			"--secure-port", strconv.Itoa(apiPort), "--cert-dir", f(n.name + "-certs"),
			"--tls-cert-file", f("apiserver.crt"), "--tls-private-key-file", f("apiserver.key"),
			"--client-ca-file", f("ca.crt"), "--token-auth-file", f("tokens.csv"),
			"--service-account-key-file", f("sa.pub"), "--service-account-signing-key-file", f("sa.key"),
			"--service-account-issuer", "https://kubernetes.default.svc",
			"--authorization-mode", "Node,RBAC", "--service-cluster-ip-range", "10.96.0.0/12",
			"--disable-admission-plugins", "ServiceAccount", "--profiling=false",
		},
	})
}

// startAPIServer starts n's API server and waits for its /readyz.
func (c *cluster) startAPIServer(n *cpNode) error {
	if err := n.apiserver.start(); err != nil {
		return err
	}
	deadline := time.Now().Add(120 * time.Second)
	for {
		if err := c.readyz(n.ns, n.ip); err == nil {
			return nil
		} else if time.Now().After(deadline) || !n.apiserver.running() {
			return fmt.Errorf("%s not ready: %v\n%s", n.apiserver.name, err, n.apiserver.tail(20))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// readyz asks the API server at ip, from namespace ns.
func (c *cluster) readyz(ns string, ip netip.Addr) error {
	hc := &http.Client{Transport: c.transport(ns, false), Timeout: 2 * time.Second}
	defer hc.CloseIdleConnections()
	return c.get(context.Background(), hc, ip)
}

func (c *cluster) get(ctx context.Context, hc *http.Client, ip netip.Addr) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+netip.AddrPortFrom(ip, apiPort).String()+"/readyz", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("readyz: %s", resp.Status)
	}
	return nil
}

func (c *cluster) transport(ns string, keepAlive bool) *http.Transport {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.caPEM)
	return &http.Transport{
		DialContext:       testbed.DialerIn(ns),
		TLSClientConfig:   &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		DisableKeepAlives: !keepAlive,
	}
}

// clientHTTP makes requests from the client namespace, a new connection
// each time (as a client reconnecting after an error would).
func (c *cluster) clientHTTP() *http.Client {
	return &http.Client{Transport: c.transport(c.client, false)}
}

// holders returns the nodes whose VIP interface carries the VIP.
func (c *cluster) holders() []*cpNode {
	var out []*cpNode
	for _, n := range c.nodes {
		if has, _ := hasAddr(n.ns, c.vipIface, c.vip); has {
			out = append(out, n)
		}
	}
	return out
}

// hasAddr reports whether interface iface in ns carries a.
func hasAddr(ns, iface string, a netip.Addr) (bool, error) {
	h, err := netns.GetFromName(ns)
	if err != nil {
		return false, err
	}
	defer h.Close()
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		return false, err
	}
	defer nl.Close()
	link, err := nl.LinkByName(iface)
	if err != nil {
		return false, err
	}
	addrs, err := nl.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return false, err
	}
	for _, x := range addrs {
		if ip, ok := netip.AddrFromSlice(x.IP); ok && ip.Unmap() == a {
			return true, nil
		}
	}
	return false, nil
}

func (c *cluster) node(name string) *cpNode {
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	return nil
}

// logs returns the tails of the agents' logs, for failures.
func (c *cluster) logs(lines int) string {
	var b strings.Builder
	for _, n := range c.nodes {
		if n.agent != nil {
			fmt.Fprintf(&b, "---- %s\n%s\n", n.agent.name, n.agent.tail(lines))
		}
	}
	if c.router != nil {
		bird := &proc{log: c.router.log}
		fmt.Fprintf(&b, "---- bird (FIB next hops to the VIP: %v)\n%s\n", c.nextHops(), bird.tail(lines))
	}
	return b.String()
}

func (c *cluster) close() {
	var wg sync.WaitGroup
	for _, p := range c.procs {
		wg.Go(func() { p.kill() })
	}
	wg.Wait()
	if c.router != nil {
		c.router.close()
	}
	for i := len(c.nss) - 1; i >= 0; i-- {
		killNetnsPids(c.nss[i])
		_, _ = ipCmd("netns", "del", c.nss[i])
	}
}

// cleanStale removes namespaces of earlier runs whose process is gone.
func cleanStale(t testing.TB) {
	out, err := ipCmd("netns", "list")
	if err != nil {
		return
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		m := nsPattern.FindStringSubmatch(f[0])
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue
		}
		killNetnsPids(f[0])
		if _, err := ipCmd("netns", "del", f[0]); err == nil {
			t.Logf("removed stale namespace %s", f[0])
		}
	}
}

// killNetnsPids SIGKILLs, by PID, what still runs in namespace name.
func killNetnsPids(name string) {
	out, err := ipCmd("netns", "pids", name)
	if err != nil {
		return
	}
	for _, s := range strings.Fields(out) {
		if pid, err := strconv.Atoi(s); err == nil && pid > 1 && pid != os.Getpid() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}
