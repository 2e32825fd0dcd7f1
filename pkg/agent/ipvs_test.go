package agent

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/go-logr/logr/funcr"
	"k8s.io/client-go/tools/record"
)

func TestCheckIPVSARP(t *testing.T) {
	p := netip.MustParsePrefix
	vip, other := netip.MustParseAddr("10.98.0.200"), netip.MustParseAddr("10.98.0.201")
	host := []ifaceAddr{
		{"lo", p("127.0.0.1/8")},
		{"eth0", p("10.98.0.11/24")},
		{"eth1", p("10.50.0.11/24")},
	}
	ipvs := func(prefixes ...string) []ifaceAddr {
		out := append([]ifaceAddr(nil), host...)
		for _, s := range prefixes {
			out = append(out, ifaceAddr{IPVSInterface, p(s)})
		}
		return out
	}
	lbOnly := func(a netip.Addr) bool { return a == vip || a == other }
	type sysctls map[string]int // "<iface>/<key>"
	loose := sysctls{}
	strict := sysctls{"all/arp_ignore": 1, "all/arp_announce": 2}
	perIface := sysctls{"eth0/arp_ignore": 1, "eth0/arp_announce": 2}
	halfStrict := sysctls{"all/arp_ignore": 1}
	tests := []struct {
		name  string
		addrs []ifaceAddr
		sys   sysctls
		want  []ipvsFinding
	}{
		{"no kube-ipvs0", host, loose, nil},
		{"kube-ipvs0 with only ClusterIPs", ipvs("10.96.0.1/32", "10.96.0.10/32"), loose, nil},
		{"LB address, loose ARP", ipvs("10.96.0.1/32", "10.98.0.200/32"), loose,
			[]ipvsFinding{{Iface: "eth0", Addrs: []netip.Addr{vip}, ARPIgnore: 0, ARPAnnounce: 0}}},
		{"two LB addresses, one link", ipvs("10.98.0.201/32", "10.98.0.200/32"), loose,
			[]ipvsFinding{{Iface: "eth0", Addrs: []netip.Addr{vip, other}}}},
		{"strict ARP (all)", ipvs("10.98.0.200/32"), strict, nil},
		{"strict ARP on the link only", ipvs("10.98.0.200/32"), perIface, nil},
		{"arp_ignore alone is not enough", ipvs("10.98.0.200/32"), halfStrict,
			[]ipvsFinding{{Iface: "eth0", Addrs: []netip.Addr{vip}, ARPIgnore: 1, ARPAnnounce: 0}}},
		{"LB address off every link (BGP)", []ifaceAddr{{"eth0", p("10.98.0.11/24")}, {IPVSInterface, p("10.98.5.200/32")}},
			loose, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sys := func(iface, key string) (int, error) { return tc.sys[iface+"/"+key], nil }
			isLB := func(a netip.Addr) bool { return lbOnly(a) || a == netip.MustParseAddr("10.98.5.200") }
			got, err := checkIPVSARP(tc.addrs, isLB, sys)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got %v\nwant %v", got, tc.want)
			}
		})
	}
}

func TestCheckIPVSARPSysctlError(t *testing.T) {
	addrs := []ifaceAddr{{"eth0", netip.MustParsePrefix("10.98.0.11/24")}, {IPVSInterface, netip.MustParsePrefix("10.98.0.200/32")}}
	errRead := errors.New("no such file")
	_, err := checkIPVSARP(addrs, func(netip.Addr) bool { return true },
		func(string, string) (int, error) { return 0, errRead })
	if !errors.Is(err, errRead) {
		t.Fatalf("err = %v, want %v", err, errRead)
	}
}

func TestIPVSReporter(t *testing.T) {
	var lines []string
	log := funcr.New(func(prefix, args string) { lines = append(lines, prefix+args) }, funcr.Options{})
	rec := record.NewFakeRecorder(10)
	r := &ipvsReporter{log: log, rec: rec, node: "n1"}
	f := []ipvsFinding{{Iface: "eth0", Addrs: []netip.Addr{netip.MustParseAddr("10.98.0.200")}}}

	r.report(f)
	r.report(f) // same state: nothing new
	f2 := []ipvsFinding{{Iface: "eth0", Addrs: []netip.Addr{netip.MustParseAddr("10.98.0.200"), netip.MustParseAddr("10.98.0.201")}}}
	r.report(f2) // another address, same link and values: nothing new
	if len(rec.Events) != 1 || len(lines) != 1 {
		t.Fatalf("events %d, log lines %d after one state; want 1 and 1: %v", len(rec.Events), len(lines), lines)
	}
	ev := <-rec.Events
	for _, want := range []string{"Warning", ReasonStrictARPRequired, "kube-ipvs0 holds 10.98.0.200", "on eth0 (arp_ignore=0, arp_announce=0)",
		"net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2"} {
		if !strings.Contains(ev, want) {
			t.Errorf("event %q lacks %q", ev, want)
		}
	}
	if !strings.Contains(lines[0], "net.ipv4.conf.all.arp_ignore=1") {
		t.Errorf("log line lacks the sysctl: %s", lines[0])
	}

	r.report(nil) // fixed
	if len(lines) != 2 || !strings.Contains(lines[1], "strict") {
		t.Fatalf("want one line saying ARP is strict now, got %v", lines)
	}
	f[0].ARPIgnore = 1 // loose again, other values: told again
	r.report(f)
	if len(rec.Events) != 1 {
		t.Fatalf("want a new Warning after the state changed, got %d", len(rec.Events))
	}
}
