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
	if _, err := Get(ctx, vip, 80, 5*time.Second); err != nil {
		t.Errorf("VIP %s with kube-ipvs0 and strict ARP: %v", vip, err)
	}
}
