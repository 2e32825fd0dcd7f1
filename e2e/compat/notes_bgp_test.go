//go:build e2e

package compat

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vip-lb/vip/e2e/lab"
)

// notesBGPEnv is the operator notes' (seed 004) BGP DaemonSet environment,
// word for word: eBGP as 65001 towards the two routers 10.0.1.1 and
// 10.0.1.2 (AS 65000), router ID from eth0, the address on eth0.
var notesBGPEnv = []string{
	"vip_interface=eth0", "vip_cidr=32", "cp_enable=false", "cp_namespace=kube-system", "svc_enable=true",
	"bgp_enable=true", "bgp_routerinterface=eth0", "bgp_as=65001", "bgp_peeras=65000",
	"bgp_peers=10.0.1.1:65000::false,10.0.1.2:65000::false",
}

// notesEndpointSlicesRule is the rule the agent names as missing from the
// notes' RBAC, added to their ClusterRole as an operator following the
// printed line would (the rest of the role word for word).
const notesEndpointSlicesRule = `  - apiGroups: ["discovery.k8s.io"]
    resources: ["endpointslices"]
    verbs: ["list", "watch"]
`

// birdPeer is a BGP router of a replayed document: BIRD in a namespace on
// the lab bridge, peering with every node.
type birdPeer struct {
	ns, sock string
	addr     netip.Addr
}

// addPeerNS makes a namespace on the lab bridge (named after the lab, so
// a crashed run's is found again) with addrs on its eth0, removed when the
// test ends.
func addPeerNS(t *testing.T, ctx context.Context, l *lab.Lab, role string, addrs ...string) string {
	t.Helper()
	ns := l.ID + "-" + role
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	run("netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	run("-n", ns, "link", "set", "lo", "up")
	run("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", "p-"+role, "netns", l.SW)
	run("-n", l.SW, "link", "set", "p-"+role, "master", "br0", "up")
	for _, a := range addrs {
		run("-n", ns, "addr", "add", a, "dev", "eth0")
	}
	run("-n", ns, "link", "set", "eth0", "up")
	return ns
}

// startBIRDPeer runs BIRD in ns as a router at addr in AS localAS, peering
// (directly connected, next hop as given) with every node address as
// nodeAS, and installing what it learns in the namespace's kernel table
// when kernel is set. It is stopped by PID when the test ends.
func startBIRDPeer(t *testing.T, l *lab.Lab, ns string, addr netip.Addr, localAS, nodeAS int, nodeAddrs []netip.Addr, kernel bool) *birdPeer {
	t.Helper()
	name := strings.ReplaceAll(addr.String(), ".", "_")
	var b strings.Builder
	fmt.Fprintf(&b, "log \"%s/bird-%s.log\" all;\nrouter id %s;\nprotocol device { scan time 10; }\n", l.Dir, name, addr)
	if kernel {
		b.WriteString("protocol kernel k4 { ipv4 { import none; export all; }; merge paths yes; }\n")
	}
	fmt.Fprintf(&b, `template bgp n4 {
  local %s as %d;
  direct;
  connect retry time 1;
  error wait time 1, 5;
  ipv4 { import all; export none; gateway direct; };
}
`, addr, localAS)
	for i, a := range nodeAddrs {
		fmt.Fprintf(&b, "protocol bgp node%d from n4 { neighbor %s as %d; }\n", i+1, a, nodeAS)
	}
	conf := filepath.Join(l.Dir, "bird-"+name+".conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	p := &birdPeer{ns: ns, addr: addr, sock: filepath.Join(l.Dir, "bird-"+name+".ctl")}
	out, err := os.Create(filepath.Join(l.Dir, "bird-"+name+".out"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, "bird", "-f", "-c", conf, "-s", p.sock, "-P", filepath.Join(l.Dir, "bird-"+name+".pid"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopOnCleanup(t, cmd, out)
	t.Cleanup(func() {
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(l.Dir, "bird-"+name+".log"))
			if len(log) > 3000 {
				log = log[len(log)-3000:]
			}
			t.Logf("---- bird %s\n%s", addr, log)
		}
	})
	return p
}

// birdc runs a BIRD command on the peer.
func (p *birdPeer) birdc(ctx context.Context, l *lab.Lab, args ...string) (string, error) {
	return l.Exec(ctx, p.ns, append([]string{"birdc", "-s", p.sock}, args...)...)
}

// waitEstablished waits for the peer's session with every node.
func (p *birdPeer) waitEstablished(ctx context.Context, l *lab.Lab, nodes int) error {
	var last string
	err := lab.Poll(ctx, 100*time.Millisecond, func() (bool, error) {
		out, err := p.birdc(ctx, l, "show", "protocols")
		last = out
		if err != nil {
			return false, nil
		}
		n := 0
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) >= 6 && strings.HasPrefix(f[0], "node") && f[5] == "Established" {
				n++
			}
		}
		return n == nodes, nil
	})
	if err != nil {
		return fmt.Errorf("BIRD %s: sessions never established: %w\n%s", p.addr, err, last)
	}
	return nil
}

// waitRoute waits until the peer has learned vip/32 from every node
// (one path per node, AS path asPath) and returns BIRD's view of it.
func (p *birdPeer) waitRoute(ctx context.Context, l *lab.Lab, vip netip.Addr, nodeAddrs []netip.Addr, asPath string) (string, error) {
	var last string
	err := lab.Poll(ctx, 100*time.Millisecond, func() (bool, error) {
		out, err := p.birdc(ctx, l, "show", "route", "for", vip.String(), "all")
		last = out
		if err != nil {
			return false, nil
		}
		for _, a := range nodeAddrs {
			if !strings.Contains(out, "via "+a.String()) {
				return false, nil
			}
		}
		return strings.Contains(out, "BGP.as_path: "+asPath+"\n"), nil
	})
	if err != nil {
		return last, fmt.Errorf("BIRD %s never learned %s/32 from every node: %w\n%s", p.addr, vip, err, last)
	}
	return last, nil
}

// TestNotesBGPDaemonSet replays the operator notes' BGP install (seed 004)
// with only the image swapped: their RBAC and their BGP environment word
// for word, args [manager], on two nodes whose eth0 also has an address in
// the routers' 10.0.1.0/24, against two BIRD routers at 10.0.1.1 and
// 10.0.1.2 (AS 65000). The notes' RBAC has no endpointslices rule: each
// agent prints the documented refusal (the rule, the file granting it) and
// no router learns the Service. Once that one rule is added to the notes'
// ClusterRole, both routers learn the Service's /32 from both nodes (eBGP,
// AS path 65001) and a client behind the first router reaches it.
func TestNotesBGPDaemonSet(t *testing.T) {
	ctx, l := newLab(t)
	r, err := l.AddRouter()
	if err != nil {
		t.Fatal(err)
	}
	// The routers of the notes: the lab's router (which forwards to the
	// external namespace) is 10.0.1.1; 10.0.1.2 is a second namespace.
	if _, err := l.Exec(ctx, r.NS, "ip", "addr", "add", "10.0.1.1/24", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	peer2NS := addPeerNS(t, ctx, l, "peer2", "10.0.1.2/24")
	var nodeAddrs []netip.Addr
	for i, n := range l.Nodes {
		a := netip.AddrFrom4([4]byte{10, 0, 1, byte(11 + i)})
		if _, err := l.Exec(ctx, n.NS, "ip", "addr", "add", a.String()+"/24", "dev", "eth0"); err != nil {
			t.Fatal(err)
		}
		nodeAddrs = append(nodeAddrs, a)
	}
	peers := []*birdPeer{
		startBIRDPeer(t, l, r.NS, netip.MustParseAddr("10.0.1.1"), 65000, 65001, nodeAddrs, true),
		startBIRDPeer(t, l, peer2NS, netip.MustParseAddr("10.0.1.2"), 65000, 65001, nodeAddrs, false),
	}
	logs := startKubeVipAgents(t, ctx, l, notesRBAC, notesBGPEnv)
	logTailsOnFailure(t, logs)
	// The documented refusal: the notes' RBAC lacks the EndpointSlices rule.
	for node, log := range logs {
		if _, err := waitLog(ctx, log, "missing RBAC rule", "resources [endpointslices]", "deploy/agent/rbac.yaml"); err != nil {
			t.Fatalf("%s: %v", node, err)
		}
	}
	// The notes' Service: an address by kube-vip.io/loadbalancerIPs (their
	// 10.0.0.10 mapped into the lab's pool).
	want := l.GlobalPool4().Addr().Next().Next().Next()
	vip := newService(t, ctx, l, "default", "nginx", lab.Annotate("kube-vip.io/loadbalancerIPs", want.String()))
	if vip != want {
		t.Fatalf("the Service got %s; the annotation asked for %s", vip, want)
	}
	// The operator adds the rule the line names; nothing is restarted.
	role := strings.Replace(notesRBAC, `    verbs: ["list", "get", "watch", "update", "create"]
`, `    verbs: ["list", "get", "watch", "update", "create"]
`+notesEndpointSlicesRule, 1)
	if role == notesRBAC {
		t.Fatal("could not add the endpointslices rule to the notes' ClusterRole")
	}
	if err := l.Env.ApplyYAML(ctx, []byte(role)); err != nil {
		t.Fatal(err)
	}
	t.Logf("endpointslices rule added to the notes' ClusterRole at %s", time.Now().Format("15:04:05.000"))
	for _, p := range peers {
		if err := p.waitEstablished(ctx, l, len(l.Nodes)); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range peers {
		out, err := p.waitRoute(ctx, l, vip, nodeAddrs, "65001")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("BIRD %s:\n%s", p.addr, out)
	}
	// The client behind the first router reaches the Service through it.
	node := waitReachedFrom(t, ctx, l, r, vip)
	route, _ := l.Exec(ctx, r.NS, "ip", "route", "show", vip.String()+"/32")
	t.Logf("%s learned by both routers (kernel on 10.0.1.1: %s) and answered by %s through 10.0.1.1", vip, strings.TrimSpace(route), node)
}
