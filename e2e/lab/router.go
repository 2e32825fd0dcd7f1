package lab

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Router is a namespace with one leg on the lab bridge and one on an
// "external" segment, and a namespace on that segment:
//
//	bridge ── eth0 10.X.0.254 [router] eth1 10.Y.0.1 ── eth0 10.Y.0.100 [ext]
//
// Y is X+128, so the external segment lies in 10.128.0.0/9 (what the
// rebuilt miniupnpd counts as public) and the lab's own 10.X/16 in
// 10.0.0.0/9 (private). The router forwards; the nodes get a route to
// 10.Y.0.0/24 through it. The ext namespace has no default route: it
// reaches the router's external address on its link and nothing else.
type Router struct {
	NS, Ext string     // router and external namespaces
	LAN     netip.Addr // router's address on the lab bridge
	WAN     netip.Addr // router's external address (what the outside sees)
	Outside netip.Addr // the external namespace's address
	WANNet  netip.Prefix
}

// AddRouter builds the router and the external namespace (removed by
// Close).
func (l *Lab) AddRouter() (*Router, error) {
	y := l.X + 128
	r := &Router{
		NS: l.ID + "-router", Ext: l.ID + "-ext",
		LAN:     l.IP4(254),
		WAN:     netip.AddrFrom4([4]byte{10, byte(y), 0, 1}),
		Outside: netip.AddrFrom4([4]byte{10, byte(y), 0, 100}),
		WANNet:  netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(y), 0, 0}), 24),
	}
	for _, ns := range []string{r.NS, r.Ext} {
		if err := l.addNS(ns); err != nil {
			return nil, err
		}
	}
	steps := [][]string{
		{"link", "add", "eth0", "netns", r.NS, "address", l.mac(254), "type", "veth", "peer", "name", "p-router", "netns", l.SW},
		{"-n", l.SW, "link", "set", "p-router", "master", "br0", "up"},
		{"-n", r.NS, "addr", "add", r.LAN.String() + "/16", "dev", "eth0"},
		{"-n", r.NS, "link", "set", "eth0", "up"},
		{"link", "add", "eth0", "netns", r.Ext, "type", "veth", "peer", "name", "eth1", "netns", r.NS},
		{"-n", r.NS, "addr", "add", r.WAN.String() + "/24", "dev", "eth1"},
		{"-n", r.NS, "link", "set", "eth1", "up"},
		{"-n", r.Ext, "addr", "add", r.Outside.String() + "/24", "dev", "eth0"},
		{"-n", r.Ext, "link", "set", "eth0", "up"},
	}
	for _, n := range l.Nodes {
		steps = append(steps, []string{"-n", n.NS, "route", "add", r.WANNet.String(), "via", r.LAN.String()})
	}
	for _, s := range steps {
		if _, err := ip(s...); err != nil {
			return nil, err
		}
	}
	if err := sysctls(r.NS, "net.ipv4.ip_forward", "1"); err != nil {
		return nil, err
	}
	return r, nil
}

// Exec runs a command inside a lab namespace and returns its output.
func (l *Lab) Exec(ctx context.Context, ns string, args ...string) (string, error) {
	return run(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...)
}

// StartProc runs bin with args in namespace ns, logging to <lab dir>/<log>,
// and stops it (by PID) when the lab closes.
func (l *Lab) StartProc(name, ns, log, bin string, args ...string) (*Proc, error) {
	p := l.track(newProc(name, ns, filepath.Join(l.Dir, log), bin, args, nil))
	return p, p.Start()
}

// DNAT is one destination-NAT rule found in a namespace's nftables ruleset.
type DNAT struct {
	Protocol string // "tcp" or "udp"
	Port     uint16 // destination port matched
	To       netip.AddrPort
}

// DNATRules lists the destination-NAT rules of the namespace's nftables
// ruleset, as miniupnpd writes them for a mapping, e.g.
// `iif "eth1" @nh,72,8 0x6 th dport 80 dnat ip to 10.70.0.200:80`
// (protocol from the IP header byte: 0x6 TCP, 0x11 UDP), or in the
// `tcp dport 80 dnat ip to …` form.
func (l *Lab) DNATRules(ctx context.Context, ns string) ([]DNAT, error) {
	out, err := l.Exec(ctx, ns, "nft", "list", "ruleset")
	if err != nil {
		return nil, err
	}
	var rules []DNAT
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		var r DNAT
		var to string
		for i, w := range f {
			switch {
			case w == "dport" && i+1 < len(f):
				if p, err := strconv.ParseUint(f[i+1], 10, 16); err == nil {
					r.Port = uint16(p)
				}
				if i > 0 && (f[i-1] == "tcp" || f[i-1] == "udp") {
					r.Protocol = f[i-1]
				}
			case w == "to" && i > 0 && i+1 < len(f) && slices.Contains(f[:i], "dnat"):
				to = f[i+1]
			case w == "@nh,72,8" && i+1 < len(f):
				r.Protocol = map[string]string{"0x6": "tcp", "0x11": "udp"}[f[i+1]]
			case w == "l4proto" && i+1 < len(f):
				r.Protocol = f[i+1]
			}
		}
		if to == "" || r.Port == 0 {
			continue
		}
		ap, err := netip.ParseAddrPort(to)
		if err != nil {
			return nil, fmt.Errorf("nft rule %q: %w", strings.TrimSpace(line), err)
		}
		r.To = ap
		rules = append(rules, r)
	}
	return rules, nil
}
