//go:build cluster

package cluster

import (
	"context"
	"net/netip"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vip-lb/vip/pkg/agent"
)

var arpReply = regexp.MustCompile(`reply from \S+ \[([0-9A-Fa-f:]+)\]`)

// arpResponders sends broadcast ARP requests for addr from the client and
// returns the nodes whose eth0 answered (by MAC).
func arpResponders(t *testing.T, c *Cluster, addr netip.Addr) []string {
	t.Helper()
	macs := map[string]string{}
	for _, n := range c.Nodes() {
		out, err := run("ip", "-n", n, "-br", "link", "show", "eth0")
		if err != nil {
			t.Fatal(err)
		}
		if f := strings.Fields(out); len(f) >= 3 {
			macs[strings.ToLower(f[2])] = n
		}
	}
	out, _ := runIn(ClientNS, "arping", "-b", "-c", "2", "-I", "eth0", addr.String())
	seen := map[string]bool{}
	for _, m := range arpReply.FindAllStringSubmatch(out, -1) {
		n, ok := macs[strings.ToLower(m[1])]
		if !ok {
			n = "unknown " + m[1]
		}
		seen[n] = true
	}
	var r []string
	for n := range seen {
		r = append(r, n)
	}
	sort.Strings(r)
	return r
}

// ipvsARP reproduces what kube-proxy's IPVS mode does to ARP (the kernel
// here has no IP_VS): every LoadBalancer address bound to a kube-ipvs0
// dummy on every node. Without strict ARP (arp_ignore=0) every node then
// answers ARP for the VIP — what docs/troubleshooting.md warns about; with
// kube-proxy's strictARP sysctls (arp_ignore=1, arp_announce=2) only the
// owner, which vip-agent bound the VIP to on eth0, answers.
func ipvsARP(t *testing.T, c *Cluster, ns, svc string, vip netip.Addr) {
	ctx := context.Background()
	owner, err := c.WaitOwner(ctx, vip)
	if err != nil {
		t.Fatal(err)
	}
	if got := arpResponders(t, c, vip); len(got) != 1 || got[0] != owner {
		t.Fatalf("before kube-ipvs0: ARP for %s answered by %v, want only the owner %s", vip, got, owner)
	}
	t.Cleanup(func() {
		for _, n := range c.Nodes() {
			_, _ = run("ip", "-n", n, "link", "del", "kube-ipvs0")
			_, _ = runIn(n, "sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=0", "net.ipv4.conf.all.arp_announce=0")
		}
		_, _ = run("ip", "-n", ClientNS, "neigh", "flush", "all")
	})
	for _, n := range c.Nodes() {
		// As kube-proxy does: a dummy that stays down, the address as /32.
		// This kernel may lack the dummy driver; an empty bridge that stays
		// down makes the address local the same way.
		if _, err := run("ip", "-n", n, "link", "add", "kube-ipvs0", "type", "dummy"); err != nil {
			if _, err := run("ip", "-n", n, "link", "add", "kube-ipvs0", "type", "bridge"); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := run("ip", "-n", n, "addr", "add", vip.String()+"/32", "dev", "kube-ipvs0"); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := run("ip", "-n", owner, "route", "get", vip.String()); err != nil || !strings.HasPrefix(out, "local ") {
		t.Fatalf("%s is not local on %s after kube-ipvs0: %v %s", vip, owner, err, out)
	}
	loose := arpResponders(t, c, vip)
	t.Logf("IPVS mode without strictARP: ARP for %s answered by %v (owner %s)", vip, loose, owner)
	if len(loose) < 2 {
		t.Errorf("kube-ipvs0 reproduction: only %v answered ARP; the non-owners were expected to answer too", loose)
	}
	// vip-agent tells the operator on every node: a Warning Event on the
	// Node naming the sysctls, and one log line.
	t0 := time.Now()
	for _, n := range c.Nodes() {
		ev := waitNodeWarning(t, c, n, agent.ReasonStrictARPRequired)
		for _, want := range []string{vip.String(), "net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2"} {
			if !strings.Contains(ev, want) {
				t.Errorf("%s: Warning %s lacks %q: %s", n, agent.ReasonStrictARPRequired, want, ev)
			}
		}
		if n == owner {
			t.Logf("Warning on %s: %s", n, ev)
		}
		waitAgentLog(t, c, n, "kube-proxy IPVS mode without strict ARP")
	}
	t.Logf("FIGURE every node's vip-agent warned about kube-ipvs0 without strict ARP %v after it appeared", since(t0))
	for _, n := range c.Nodes() {
		if _, err := runIn(n, "sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2"); err != nil {
			t.Fatal(err)
		}
	}
	strict := arpResponders(t, c, vip)
	t.Logf("IPVS mode with strictARP: ARP for %s answered by %v (owner %s)", vip, strict, owner)
	if len(strict) != 1 || strict[0] != owner {
		t.Errorf("with strict ARP, ARP for %s answered by %v, want only the owner %s", vip, strict, owner)
	}
	for _, n := range c.Nodes() {
		waitAgentLog(t, c, n, "ARP is strict now next to kube-ipvs0")
	}
	if _, err := Get(ctx, vip, 80, 5*time.Second); err != nil {
		t.Errorf("VIP %s with kube-ipvs0 and strict ARP: %v", vip, err)
	}
}

// waitNodeWarning waits for a Warning Event with reason on Node node (the
// agent checks every 15 s) and returns its message.
func waitNodeWarning(t *testing.T, c *Cluster, node, reason string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var msg string
	err := Poll(ctx, 500*time.Millisecond, func() (bool, error) {
		evs, err := c.Admin.CoreV1().Events(metav1.NamespaceAll).List(ctx, metav1.ListOptions{
			FieldSelector: "involvedObject.kind=Node,involvedObject.name=" + node + ",reason=" + reason})
		if err != nil {
			return false, nil
		}
		for _, e := range evs.Items {
			if e.Type == v1.EventTypeWarning {
				msg = e.Message
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no Warning %s on Node %s: %v", reason, node, err)
	}
	return msg
}

// waitAgentLog waits until the log of the vip-agent pod on node has a line
// containing s.
func waitAgentLog(t *testing.T, c *Cluster, node, s string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var last string
	err := Poll(ctx, time.Second, func() (bool, error) {
		pods, err := c.Admin.CoreV1().Pods(AgentNamespace).List(ctx, metav1.ListOptions{
			LabelSelector: "app.kubernetes.io/name=vip-agent", FieldSelector: "spec.nodeName=" + node})
		if err != nil || len(pods.Items) == 0 {
			return false, nil
		}
		out, err := c.Kubectl(ctx, "logs", "-n", AgentNamespace, pods.Items[0].Name)
		if err != nil {
			return false, nil
		}
		last = out
		return strings.Contains(out, s), nil
	})
	if err != nil {
		lines := strings.Split(strings.TrimSpace(last), "\n")
		if len(lines) > 10 {
			lines = lines[len(lines)-10:]
		}
		t.Fatalf("vip-agent on %s never logged %q: %v\n%s", node, s, err, strings.Join(lines, "\n"))
	}
}
