//go:build e2e

package compat

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vip-lb/vip/e2e/lab"
)

// blogBGPEnv is the blog's example BGP DaemonSet environment (kube-vip
// manifest daemonset --services --inCluster --bgp --bgpRouterID
// 192.168.0.1 --bgppeers ...), word for word but for the peers: the three
// routers 192.168.0.10-12 are the lab's one router (PEER).
var blogBGPEnv = []string{
	"vip_arp=false", "vip_interface=lo", "svc_enable=true", "bgp_enable=true", "bgp_routerid=192.168.0.1",
	"bgp_as=65000", "bgp_peeras=65000", "bgp_peers=PEER:65000::false",
}

// startBIRD runs BIRD in the router namespace, peering (iBGP, AS 65000)
// with every node (directly connected: the next hops are the nodes) and installing what it learns in the router's kernel
// table (ECMP). It is stopped by PID when the lab closes.
func startBIRD(t *testing.T, l *lab.Lab, r *lab.Router) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, `log "%s/bird.log" all;
router id %s;
protocol device { scan time 10; }
protocol kernel k4 { ipv4 { import none; export all; }; merge paths yes; }
template bgp n4 {
  local %s as 65000;
  direct;
  connect retry time 1;
  error wait time 1, 5;
  ipv4 { import all; export none; gateway direct; };
}
`, l.Dir, r.LAN, r.LAN)
	for _, n := range l.Nodes {
		fmt.Fprintf(&b, "protocol bgp %s from n4 { neighbor %s as 65000; }\n", n.Name, n.IP4)
	}
	conf := filepath.Join(l.Dir, "bird.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(l.Dir, "bird.ctl")
	if _, err := l.StartProc("bird", r.NS, "bird.out", "bird", "-f", "-c", conf, "-s", sock, "-P", filepath.Join(l.Dir, "bird.pid")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := os.ReadFile(filepath.Join(l.Dir, "bird.log"))
			if len(out) > 3000 {
				out = out[len(out)-3000:]
			}
			t.Logf("---- bird\n%s", out)
		}
	})
	return sock
}

// TestBlogBGPDaemonSet: the blog's BGP DaemonSet (env above, args
// [manager], kube-vip's ServiceAccount and generator RBAC) on both nodes
// against a BIRD router: the Service's address is learned by the router
// (a /32 from BGP in its kernel table) and answers the external namespace
// behind the router.
func TestBlogBGPDaemonSet(t *testing.T) {
	ctx, l := newLab(t)
	r, err := l.AddRouter()
	if err != nil {
		t.Fatal(err)
	}
	sock := startBIRD(t, l, r)
	env := make([]string, len(blogBGPEnv))
	for i, e := range blogBGPEnv {
		env[i] = strings.ReplaceAll(e, "PEER", r.LAN.String())
	}
	logs := startKubeVipAgents(t, ctx, l, kubeVipRBAC, env)
	t.Cleanup(func() {
		if t.Failed() {
			for node, log := range logs {
				b, _ := os.ReadFile(log)
				if len(b) > 3000 {
					b = b[len(b)-3000:]
				}
				t.Logf("---- %s\n%s", node, b)
			}
		}
	})
	var protos string
	if err := lab.Poll(ctx, 100*time.Millisecond, func() (bool, error) {
		out, err := l.Exec(ctx, r.NS, "birdc", "-s", sock, "show", "protocols")
		protos = out
		if err != nil {
			return false, nil
		}
		for _, n := range l.Nodes {
			ok := false
			for _, line := range strings.Split(out, "\n") {
				f := strings.Fields(line)
				ok = ok || (len(f) >= 6 && f[0] == n.Name && f[5] == "Established")
			}
			if !ok {
				return false, nil
			}
		}
		return true, nil
	}); err != nil {
		t.Fatalf("BGP sessions never established: %v\n%s", err, protos)
	}
	vip := newService(t, ctx, l, "default", "hello")
	var route string
	if err := lab.Poll(ctx, 100*time.Millisecond, func() (bool, error) {
		out, err := l.Exec(ctx, r.NS, "ip", "route", "show", vip.String()+"/32")
		route = out
		return err == nil && strings.Contains(out, "proto bird") && strings.Contains(out, "via") && !strings.Contains(out, "unreachable"), nil
	}); err != nil {
		t.Fatalf("the router never learned %s/32: %v (last: %q)", vip, err, route)
	}
	// The external namespace reaches the Service through the router.
	if _, err := l.Exec(ctx, r.Ext, "ip", "route", "add", vip.String()+"/32", "via", r.WAN.String()); err != nil {
		t.Fatal(err)
	}
	var node string
	var last error
	gctx, gcancel := context.WithTimeout(ctx, 30*time.Second)
	defer gcancel()
	if err := lab.Poll(gctx, 50*time.Millisecond, func() (bool, error) {
		node, last = l.GetFrom(ctx, r.Ext, vip, lab.ServicePort, 500*time.Millisecond)
		return last == nil && node != "", nil
	}); err != nil {
		var d strings.Builder
		for _, n := range l.Nodes {
			for _, c := range [][]string{{"ip", "addr", "show", "lo"}, {"ip", "route"}, {"nft", "list", "ruleset"}, {"sysctl", "net.ipv4.conf.all.rp_filter", "net.ipv4.conf.eth0.rp_filter"}} {
				out, err := l.Exec(ctx, n.NS, c...)
				fmt.Fprintf(&d, "%s %v: %v\n%s\n", n.Name, c, err, out)
			}
		}
		for _, ns := range []string{r.NS, r.Ext} {
			out, err := l.Exec(ctx, ns, "ip", "route")
			fmt.Fprintf(&d, "%s ip route: %v\n%s\n", ns, err, out)
		}
		t.Fatalf("%s never answered through the router: %v (last error %v)\n%s", vip, err, last, d.String())
	}
	t.Logf("%s learned by the router (%s) and answered by %s through it", vip, strings.TrimSpace(route), node)
}
