package ccmtest

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
)

// hostileRSSLimit bounds vip-ccm's resident memory through every hostile
// input below (it idles at 40-60 MB).
const hostileRSSLimit = 256 << 20

// TestHostileInput feeds vip-ccm pools and Services meant to hurt it: huge
// IPv6 ranges, /0 CIDRs, thousands of keys, malformed and reversed entries,
// requests for the control-plane VIP, another Service's address, multicast
// and link-local addresses, oversized annotations. Each gets an address that
// is safe or a Warning Event, within bounded time and memory, and the
// Services that were fine before keep their addresses.
func TestHostileInput(t *testing.T) {
	h := New(t)
	cs := h.Admin
	ctx := tctx(t)
	const cp = "10.60.0.3"
	pools := map[string]string{"cidr-global": "10.60.0.0/28", "cidr-canary": "10.61.0.0/30"}
	h.SetPools(ctx, pools)
	createNode(t, cs, "node-1", false, v1.NodeAddress{Type: v1.NodeInternalIP, Address: "10.60.0.4"})
	ccm := h.StartCCM("vip-ccm", "--leader-elect=false", "--control-plane-address="+cp, "--retry-after=2s", "--v=2")
	create(t, cs, LBService("canary", "before"))
	canary := waitIP(t, cs, "canary", "before")

	// Hostile pools, all at once: one update of the ConfigMap.
	huge := make([]string, 0, 5000)
	for i := range 5000 {
		huge = append(huge, fmt.Sprintf("10.%d.%d.0/30", 100+i/256, i%256))
	}
	pools["cidr-huge6"] = "fd00::/8"
	pools["range-huge6"] = "fd00::1-fdff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"
	pools["cidr-zero"] = "0.0.0.0/0"
	pools["cidr-zero6"] = "::/0"
	pools["cidr-long"] = strings.Join(huge, ",")
	pools["range-reversed"] = "10.62.0.9-10.62.0.1"
	pools["cidr-garbage"] = "300.1.1.0/24,10.63.0.0/33,not-a-cidr"
	for i := range 3000 {
		pools["cidr-many"+strconv.Itoa(i)] = fmt.Sprintf("10.%d.%d.0/30", 200+i/256, i%256)
	}
	t0 := time.Now()
	h.SetPools(ctx, pools)
	waitEvent(t, cs, PoolsNamespace, "ConfigMap", PoolsName, v1.EventTypeWarning, "PoolConfigInvalid")
	t.Logf("PoolConfigInvalid Event %v after the update", time.Since(t0).Round(time.Millisecond))

	// Services that get an address from the hostile pools: it must be safe.
	for _, s := range []struct {
		ns   string
		opts []func(*v1.Service)
	}{
		{"huge6", []func(*v1.Service){WithFamilies(v1.IPFamilyPolicySingleStack, v1.IPv6Protocol)}},
		{"long", nil},
		{"many2999", nil},
	} {
		t0 := time.Now()
		create(t, cs, LBService(s.ns, "svc", s.opts...))
		ip := waitIP(t, cs, s.ns, "svc")
		a := netip.MustParseAddr(ip)
		if !a.IsPrivate() || ip == cp || ip == "10.60.0.4" || ip == canary {
			t.Errorf("%s/svc got unsafe address %s", s.ns, ip)
		}
		t.Logf("%s/svc: %s in %v", s.ns, ip, time.Since(t0).Round(time.Millisecond))
	}
	// Namespaces whose own entries are all bad (a /0 is refused: it holds
	// addresses nobody here owns) fall back to global, as if the entries
	// were absent; the Warning on the ConfigMap says why.
	for _, ns := range []string{"garbage", "zero", "reversed"} {
		create(t, cs, LBService(ns, "svc"))
		if ip := waitIP(t, cs, ns, "svc"); !netip.MustParsePrefix("10.60.0.0/28").Contains(netip.MustParseAddr(ip)) {
			t.Errorf("%s/svc got %s, want one from cidr-global", ns, ip)
		}
	}
	// IPv6 has no global pool here: the Service waits, and its Warning
	// names the invalid entries.
	create(t, cs, LBService("zero6", "svc", WithFamilies(v1.IPFamilyPolicySingleStack, v1.IPv6Protocol)))
	if ev := waitEvent(t, cs, "zero6", "Service", "svc", v1.EventTypeWarning, "NoAddressAvailable"); !strings.Contains(ev.Message, "every address") {
		t.Errorf("NoAddressAvailable Event does not say why the /0 was refused: %q", ev.Message)
	}

	// Hostile Services: each gets its Warning and no address.
	otherPool := waitIP(t, cs, "long", "svc") // cidr-long serves namespace long only
	taken := waitIP(t, cs, "garbage", "svc")  // cidr-global serves every namespace
	for _, s := range []struct{ name, ann, reason string }{
		{"cpvip", cp, "AddressForbidden"},
		{"node", "10.60.0.4", "AddressForbidden"},
		{"multicast", "239.1.2.3", "AddressForbidden"},
		{"multicast6", "ff02::1", "AddressForbidden"},
		{"linklocal6", "fe80::1", "AddressForbidden"},
		{"broadcast", "255.255.255.255", "AddressForbidden"},
		{"unspecified6", "::", "AddressForbidden"},
		{"other", taken, "AddressConflict"},
		{"other-pool", otherPool, "AddressForbidden"},
		{"three", "10.60.0.5,10.60.0.6,fd00::5", "InvalidAddressRequest"},
		{"huge-annotation", manyAddrs(15000), "InvalidAddressRequest"},
		{"garbage-annotation", strings.Repeat("x", 200000), "InvalidAddressRequest"},
		{"zoned", "fe80::1%eth0", "InvalidAddressRequest"},
	} {
		t.Run(s.name, func(t *testing.T) {
			create(t, cs, LBService("hostile", s.name, WithAnnotation(annIPs, s.ann)))
			t0 := time.Now()
			waitEvent(t, cs, "hostile", "Service", s.name, v1.EventTypeWarning, s.reason)
			t.Logf("%s Event after %v", s.reason, time.Since(t0).Round(time.Millisecond))
			assertPending(t, cs, "hostile", s.name, 0)
		})
	}

	// Nothing that worked before was lost, and vip-ccm is still healthy.
	wantIP(t, cs, "canary", "before", canary)
	create(t, cs, LBService("canary", "after"))
	if ip := waitIP(t, cs, "canary", "after"); !netip.MustParsePrefix("10.61.0.0/30").Contains(netip.MustParseAddr(ip)) {
		t.Errorf("canary/after got %s, want one from cidr-canary", ip)
	}
	if exited, err := ccm.Exited(); exited {
		t.Fatalf("vip-ccm exited: %v", err)
	}
	rss, err := rssOf(ccm.PID())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("vip-ccm RSS after the hostile input: %d MB", rss>>20)
	if rss > hostileRSSLimit {
		t.Errorf("vip-ccm RSS %d MB exceeds %d MB", rss>>20, hostileRSSLimit>>20)
	}
}

// manyAddrs lists n distinct IPv4 addresses, comma-separated (about 12
// bytes each).
func manyAddrs(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf("10.70.%d.%d", i/256, i%256)
	}
	return strings.Join(parts, ",")
}

// rssOf returns a process's resident set size in bytes.
func rssOf(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}
