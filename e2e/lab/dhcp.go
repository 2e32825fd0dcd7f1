package lab

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// DHCPServer is dnsmasq on its own lab namespace (host 2): DHCP for
// 10.X.0.150-10.X.0.199 with short renewal timers, and DNS on 10.X.0.2:53
// for the names its clients send (domain "lab").
type DHCPServer struct {
	NS     string
	IP     netip.Addr
	Leases string // dnsmasq's lease file
	Proc   *Proc
	First  netip.Addr
	Last   netip.Addr
	Domain string
}

// DHCP timers the lab's dnsmasq hands out: dnsmasq's shortest lease is two
// minutes, T1 and T2 are set short so that renewals happen during a test.
const (
	DHCPLease = 2 * time.Minute
	DHCPT1    = 8 * time.Second
	DHCPT2    = 14 * time.Second
)

// StartDHCP adds the DHCP server namespace to the bridge and starts dnsmasq
// there (LAB.md section 4: --no-ping, checksum offload off on its veth).
func (l *Lab) StartDHCP(ctx context.Context) (*DHCPServer, error) {
	const host = 2
	ns, err := l.addLeg("dhcp", host)
	if err != nil {
		return nil, err
	}
	if _, err := run(ctx, "ip", "netns", "exec", ns, "ethtool", "-K", "eth0", "tx", "off"); err != nil {
		return nil, fmt.Errorf("ethtool in %s: %w", ns, err)
	}
	s := &DHCPServer{NS: ns, IP: l.IP4(host), Leases: filepath.Join(l.Dir, "dnsmasq.leases"),
		First: l.IP4(150), Last: l.IP4(199), Domain: "lab"}
	args := []string{
		"--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
		"--interface=eth0", "--bind-interfaces", "--except-interface=lo",
		"--listen-address=" + s.IP.String(), "--port=53",
		"--domain=" + s.Domain, "--local=/" + s.Domain + "/",
		fmt.Sprintf("--dhcp-range=%s,%s,255.255.0.0,%ds", s.First, s.Last, int(DHCPLease.Seconds())),
		fmt.Sprintf("--dhcp-option=58,%d", int(DHCPT1.Seconds())),
		fmt.Sprintf("--dhcp-option=59,%d", int(DHCPT2.Seconds())),
		"--dhcp-authoritative", "--no-ping",
		"--dhcp-leasefile=" + s.Leases, "--pid-file=" + filepath.Join(l.Dir, "dnsmasq.pid"),
		"--log-dhcp", "--log-queries", "--log-facility=-", "--user=root",
	}
	s.Proc = l.track(newProc("dnsmasq", ns, filepath.Join(l.Dir, "dnsmasq.log"), "dnsmasq", args, nil))
	if err := s.Start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Start runs dnsmasq (again) and waits until it listens on port 67.
func (s *DHCPServer) Start(ctx context.Context) error {
	if err := s.Proc.Start(); err != nil {
		return err
	}
	return Poll(ctx, 20*time.Millisecond, func() (bool, error) {
		if !s.Proc.Running() {
			return false, fmt.Errorf("dnsmasq exited: %w\n%s", s.Proc.ExitErr(), s.Proc.Tail(20))
		}
		out, err := run(ctx, "ip", "netns", "exec", s.NS, "ss", "-Hlun", "sport", "= :67")
		return err == nil && strings.TrimSpace(out) != "", nil
	})
}

// Stop ends dnsmasq (its lease file stays, and a restart reads it).
func (s *DHCPServer) Stop() error { return s.Proc.Stop(syscall.SIGTERM, 10*time.Second) }

// LeaseFor returns the address dnsmasq's lease file holds for mac.
func (s *DHCPServer) LeaseFor(mac string) (netip.Addr, bool, error) {
	f, err := os.Open(s.Leases)
	if os.IsNotExist(err) {
		return netip.Addr{}, false, nil
	}
	if err != nil {
		return netip.Addr{}, false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// <expiry> <mac> <ip> <hostname> <client-id>
		fs := strings.Fields(sc.Text())
		if len(fs) >= 3 && strings.EqualFold(fs[1], mac) {
			a, err := netip.ParseAddr(fs[2])
			return a, err == nil, err
		}
	}
	return netip.Addr{}, false, sc.Err()
}

// Resolver is a Go resolver that asks the lab's dnsmasq, dialling from the
// client namespace.
func (s *DHCPServer) Resolver(clientNS string) *net.Resolver {
	dial := DialerIn(clientNS)
	server := netip.AddrPortFrom(s.IP, 53).String()
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return dial(ctx, network, server)
	}}
}

// Links returns the names of the links in a node's namespace.
func (l *Lab) Links(node string) ([]string, error) {
	n := l.Node(node)
	if n == nil {
		return nil, fmt.Errorf("no node %q", node)
	}
	out, err := ip("-n", n.NS, "-o", "link", "show")
	if err != nil {
		return nil, err
	}
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		fs := strings.Fields(line)
		if len(fs) >= 2 {
			names = append(names, strings.SplitN(strings.TrimSuffix(fs[1], ":"), "@", 2)[0])
		}
	}
	return names, nil
}

// addLeg adds a namespace on the bridge with host's addresses, as
// buildNetwork does for the fixed roles.
func (l *Lab) addLeg(role string, host int) (string, error) {
	ns := l.ID + "-" + role
	if err := l.addNS(ns); err != nil {
		return "", err
	}
	if _, err := ip("link", "add", "eth0", "netns", ns, "address", l.mac(host), "type", "veth",
		"peer", "name", "p-"+role, "netns", l.SW); err != nil {
		return "", err
	}
	if _, err := ip("-n", l.SW, "link", "set", "p-"+role, "master", "br0", "up"); err != nil {
		return "", err
	}
	for _, c := range [][]string{
		{"addr", "add", l.IP4(host).String() + "/16", "dev", "eth0"},
		{"link", "set", "eth0", "up"},
	} {
		if _, err := ip(append([]string{"-n", ns}, c...)...); err != nil {
			return "", err
		}
	}
	return ns, nil
}

// StartControlPlaneAgent runs a second vip-agent in a node's namespace in
// control-plane mode only, electing through the lab's API server (as its
// "local" one), with extra flags; its resolver is dns (an
// /etc/netns/<namespace>/resolv.conf, which `ip netns exec` mounts over
// /etc/resolv.conf). The program is stopped by Close; the returned function
// removes the resolver file.
func (l *Lab) StartControlPlaneAgent(node string, dns netip.Addr, extra ...string) (*Proc, func(), error) {
	n := l.Node(node)
	if n == nil {
		return nil, func() {}, fmt.Errorf("no node %q", node)
	}
	dir := filepath.Join("/etc/netns", n.NS)
	cleanup := func() { _ = os.RemoveAll(dir) }
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, cleanup, err
	}
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte("nameserver "+dns.String()+"\n"), 0o644); err != nil {
		return nil, cleanup, err
	}
	args := append([]string{
		"--kubeconfig", filepath.Join(l.Dir, "vip-agent.kubeconfig"),
		"--arp", "--node-name", n.Name, "--interface", "eth0",
		"--controlplane", "--services=false", "--local-apiserver", l.Env.Server(),
		"--state-file", filepath.Join(l.Dir, n.Name+"-cp.json"),
		"--metrics-address", fmt.Sprintf("%s:%d", n.IP4, MetricsPort+1),
	}, extra...)
	p := l.track(newProc("vip-agent control plane "+n.Name, n.NS, filepath.Join(l.Dir, n.Name+"-cp-agent.log"),
		filepath.Join(l.Opts.BinDir, "vip-agent"), args, nil))
	return p, cleanup, p.Start()
}
