//go:build e2e

package bgp

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// frr is a running FRR (zebra + bgpd) in its own namespace on the bridge.
type frr struct {
	ns, dir     string
	ip          netip.Addr
	zebra, bgpd *proc
	nl          *netlink.Handle
	nsh         netns.NsHandle
}

// startFRR starts zebra and bgpd (as user frr, in a folder owned by frr)
// with a passive-friendly session to every node.
func (l *bgpLab) startFRR(t testing.TB) *frr {
	t.Helper()
	uid, gid, err := frrUser()
	if err != nil {
		t.Skipf("FRR not installed: %v", err)
	}
	if _, err := os.Stat("/usr/lib/frr/bgpd"); err != nil {
		t.Skipf("FRR not installed: %v", err)
	}
	f := &frr{ip: l.ip4(0, 253), dir: filepath.Join(l.dir, "frr")}
	if l.frrNS == "" {
		if l.frrNS, err = l.leg("frr", 253); err != nil {
			t.Fatal(err)
		}
	}
	f.ns = l.frrNS
	if err := os.MkdirAll(f.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var conf strings.Builder
	fmt.Fprintf(&conf, "frr defaults datacenter\nhostname lab-frr\nlog file %s/bgpd.log\nrouter bgp %d\n bgp router-id %s\n no bgp ebgp-requires-policy\n",
		f.dir, routerAS, f.ip)
	for _, n := range l.nodes {
		fmt.Fprintf(&conf, " neighbor %s remote-as %d\n neighbor %s timers %d %d\n neighbor %s timers connect 1\n",
			n.ip4, nodeAS, n.ip4, keepalive, holdTime, n.ip4)
	}
	files := map[string]string{"bgpd.conf": conf.String(), "zebra.conf": "hostname lab-frr\n"}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(f.dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{f.dir, filepath.Join(f.dir, "bgpd.conf"), filepath.Join(f.dir, "zebra.conf")} {
		if err := os.Chown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	common := []string{"--vty_socket", f.dir, "-z", filepath.Join(f.dir, "zserv.api"), "-A", "127.0.0.1", "-P", "0"}
	f.zebra = l.track(&proc{name: "zebra", ns: f.ns, log: filepath.Join(f.dir, "zebra.out"), bin: "/usr/lib/frr/zebra",
		args: append([]string{"-f", filepath.Join(f.dir, "zebra.conf"), "-i", filepath.Join(f.dir, "zebra.pid"), "--log", "file:" + filepath.Join(f.dir, "zebra.log")}, common...)})
	f.bgpd = l.track(&proc{name: "bgpd", ns: f.ns, log: filepath.Join(f.dir, "bgpd.out"), bin: "/usr/lib/frr/bgpd",
		args: append([]string{"-f", filepath.Join(f.dir, "bgpd.conf"), "-i", filepath.Join(f.dir, "bgpd.pid")}, common...)})
	if err := f.zebra.start(); err != nil {
		t.Fatal(err)
	}
	l.eventually(t, "zebra's API socket", 10*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(f.dir, "zserv.api"))
		return err == nil
	})
	if err := f.bgpd.start(); err != nil {
		t.Fatal(err)
	}
	if f.nsh, err = netns.GetFromName(f.ns); err != nil {
		t.Fatal(err)
	}
	if f.nl, err = netlink.NewHandleAt(f.nsh); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *frr) stop() {
	for _, p := range []*proc{f.bgpd, f.zebra} {
		if p != nil {
			pid := p.pid()
			p.stop(syscall.SIGTERM, 10*time.Second)
			_ = os.RemoveAll(fmt.Sprintf("/var/tmp/frr/%s.%d", filepath.Base(p.bin), pid))
		}
	}
	if f.nl != nil {
		f.nl.Close()
		f.nsh.Close()
	}
}

// established returns the nodes bgpd has an established session with.
func (f *frr) established() map[string]bool {
	out, err := run("vtysh", "--vty_socket", f.dir, "-c", "show bgp summary json")
	up := map[string]bool{}
	if err != nil {
		return up
	}
	var s struct {
		IPv4Unicast struct {
			Peers map[string]struct{ State string } `json:"peers"`
		} `json:"ipv4Unicast"`
	}
	if json.Unmarshal([]byte(out), &s) == nil {
		for a, p := range s.IPv4Unicast.Peers {
			if p.State == "Established" {
				up[a] = true
			}
		}
	}
	return up
}

// annotate sets (or, with nil, removes) the BGP annotations of a node.
func (l *bgpLab) annotate(t testing.TB, node string, ann map[string]*string) {
	t.Helper()
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": ann}})
	if _, err := l.admin.CoreV1().Nodes().Patch(context.Background(), node, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatalf("annotating %s: %v", node, err)
	}
}

// TestFRRFromAnnotations: two nodes get an extra peer, FRR (bgpd + zebra),
// from their annotations while running; FRR installs the ECMP route in its
// FIB. Removing one node's annotations takes that node back to its flags;
// a malformed annotation is reported and changes nothing.
func TestFRRFromAnnotations(t *testing.T) {
	l := lab
	f := l.startFRR(t)
	defer f.stop()
	defer l.ensureAllUp(t)
	peers := fmt.Sprintf("%s:%d,[%s]:%d,%s:%d", l.routerIP4, routerAS, l.routerIP6, routerAS, f.ip, routerAS)
	clear := map[string]*string{annPrefix + "/node-asn": nil, annPrefix + "/src-ip": nil, annPrefix + "/bgp-peers": nil}
	for _, name := range []string{"node1", "node2"} {
		n := l.node(name)
		l.annotate(t, name, map[string]*string{
			annPrefix + "/node-asn": ptr(fmt.Sprint(nodeAS)), annPrefix + "/src-ip": ptr(n.ip4.String()), annPrefix + "/bgp-peers": ptr(peers),
		})
		defer l.annotate(t, name, clear)
	}
	l.eventually(t, "FRR sessions with node1 and node2", 30*time.Second, func() bool {
		up := f.established()
		return up[l.node("node1").ip4.String()] && up[l.node("node2").ip4.String()]
	})

	l.createService(t, "default", "frr")
	defer l.deleteService(t, "default", "frr")
	vip := l.waitAddress(t, "default", "frr")
	hops := func() []netip.Addr { return nextHopsIn(f.nl, vip) }
	l.eventually(t, fmt.Sprintf("FRR's FIB route %s via node1 and node2 (has %v)", vip, hops()), 20*time.Second, func() bool {
		return slices.Equal(hops(), l.nodeIPs(false, "node1", "node2"))
	})
	l.waitNextHops(t, vip, 10*time.Second, l.nodeIPs(false)...) // BIRD keeps all three

	// A malformed annotation on node3 is reported and ignored.
	l.annotate(t, "node3", map[string]*string{annPrefix + "/node-asn": ptr("64513"), annPrefix + "/src-ip": ptr(l.node("node3").ip4.String()),
		annPrefix + "/bgp-peers": ptr("fd00::1:64512")})
	defer l.annotate(t, "node3", clear)
	l.eventually(t, "a BGPConfigInvalid Event on node3", 10*time.Second, func() bool {
		evs, err := l.admin.CoreV1().Events("default").List(context.Background(), metav1.ListOptions{
			FieldSelector: "involvedObject.kind=Node,involvedObject.name=node3,reason=BGPConfigInvalid"})
		return err == nil && len(evs.Items) > 0
	})

	// node1 back to its flags: FRR loses node1, BIRD keeps everyone.
	l.annotate(t, "node1", clear)
	l.eventually(t, fmt.Sprintf("FRR's route via node2 only (has %v)", hops()), 20*time.Second, func() bool {
		return slices.Equal(hops(), l.nodeIPs(false, "node2"))
	})
	time.Sleep(500 * time.Millisecond)
	if got := l.nextHops(vip); !slices.Equal(got, l.nodeIPs(false)) {
		t.Errorf("BIRD's route changed to %v while the annotations changed", got)
	}
}

// nextHopsIn returns the next hops of the host route for vip in the FIB
// behind handle, sorted.
func nextHopsIn(h *netlink.Handle, vip netip.Addr) []netip.Addr {
	fam := netlink.FAMILY_V4
	if vip.Is6() {
		fam = netlink.FAMILY_V6
	}
	routes, err := h.RouteListFiltered(fam, &netlink.Route{Dst: prefixNet(netip.PrefixFrom(vip, vip.BitLen())), Table: 254},
		netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, r := range routes {
		if r.Gw != nil {
			a, _ := netip.AddrFromSlice(r.Gw)
			out = append(out, a.Unmap())
		}
		for _, nh := range r.MultiPath {
			a, _ := netip.AddrFromSlice(nh.Gw)
			out = append(out, a.Unmap())
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}
