package agentconfig

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/vip-lb/vip/pkg/bgpconfig"
	"github.com/vip-lb/vip/pkg/compat"
)

// BGPConfig is the BGP part of the command line and environment.
type BGPConfig struct {
	RouterID, RouterInterface         string
	LocalAS, PeerAS                   uint32
	PeerAddress, PeerPass             string
	Multihop                          bool
	Peers                             string
	SourceIP, SourceIF                string
	HoldTime, Keepalive, ConnectRetry int
	ListenPort                        int
	PasswordFile                      string
	Communities, LargeCommunities     string
	LocalPref                         uint32
	GracefulRestart                   bool
	RestartTime                       int
	NextHop, NextHop6, Annotations    string
	PeerSelectors                     []string
}

func defaultBGPConfig() BGPConfig {
	return BGPConfig{LocalAS: 65000, PeerAS: 65000, HoldTime: 30, Keepalive: 10, ConnectRetry: 5, ListenPort: -1, RestartTime: 120}
}

// bgpEnvFlags maps kube-vip's BGP environment variables onto flags.
var bgpEnvFlags = map[string]string{
	"bgp_routerid": "bgpRouterID", "bgp_routerinterface": "bgpRouterInterface",
	"bgp_as": "localAS", "bgp_peeras": "peerAS", "bgp_peeraddress": "peerAddress", "bgp_peerpass": "peerPass",
	"bgp_multihop": "multihop", "bgp_peers": "bgppeers", "bgp_sourceip": "sourceIP", "bgp_sourceif": "sourceIF",
	"bgp_hold_time": "bgp-hold-time", "bgp_keepalive_interval": "bgp-keepalive-interval", "annotation": "annotations",
	"bgp_peer_node_selectors": "bgp-peer-node-selector",
}

func (b *BGPConfig) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&b.RouterID, "bgpRouterID", b.RouterID, "BGP router ID, an IPv4 address (env bgp_routerid; default: --sourceIP).")
	fs.StringVar(&b.RouterInterface, "bgpRouterInterface", b.RouterInterface, "Take the router ID from this interface's first IPv4 address (env bgp_routerinterface).")
	fs.Uint32Var(&b.LocalAS, "localAS", b.LocalAS, "This node's AS (env bgp_as).")
	fs.Uint32Var(&b.PeerAS, "peerAS", b.PeerAS, "AS of --peerAddress (env bgp_peeras).")
	fs.StringVar(&b.PeerAddress, "peerAddress", b.PeerAddress, "A single BGP peer (env bgp_peeraddress); added to --bgppeers.")
	fs.StringVar(&b.PeerPass, "peerPass", b.PeerPass, "TCP MD5 password of --peerAddress (env bgp_peerpass).")
	fs.BoolVar(&b.Multihop, "multihop", b.Multihop, "eBGP multihop for --peerAddress (env bgp_multihop).")
	fs.StringVar(&b.Peers, "bgppeers", b.Peers, "Peers as address:AS:password:multihop[:port],… with IPv6 addresses in brackets (env bgp_peers).")
	fs.StringVar(&b.SourceIP, "sourceIP", b.SourceIP, "Local address of every BGP session (env bgp_sourceip).")
	fs.StringVar(&b.SourceIF, "sourceIF", b.SourceIF, "Bind every BGP session to this interface (env bgp_sourceif).")
	fs.IntVar(&b.HoldTime, "bgp-hold-time", b.HoldTime, "BGP hold time in seconds (env bgp_hold_time).")
	fs.IntVar(&b.Keepalive, "bgp-keepalive-interval", b.Keepalive, "BGP keepalive interval in seconds (env bgp_keepalive_interval).")
	fs.IntVar(&b.ConnectRetry, "bgp-connect-retry", b.ConnectRetry, "Seconds between connection attempts, and before reconnecting after a reset.")
	fs.IntVar(&b.ListenPort, "bgp-listen-port", b.ListenPort, "Accept BGP sessions on this port (-1: only dial out).")
	fs.StringVar(&b.PasswordFile, "bgp-password-file", b.PasswordFile, "File or mounted Secret folder with TCP MD5 passwords (folder: one file per peer address, ':' written '-', and \"password\" for the rest).")
	fs.StringVar(&b.Communities, "bgp-communities", b.Communities, "Communities on every route: asn:value or well-known names, comma-separated.")
	fs.StringVar(&b.LargeCommunities, "bgp-large-communities", b.LargeCommunities, "Large communities on every route: global:local1:local2, comma-separated.")
	fs.Uint32Var(&b.LocalPref, "bgp-local-pref", b.LocalPref, "LOCAL_PREF of every route (iBGP peers only; 0: not set).")
	fs.BoolVar(&b.GracefulRestart, "bgp-graceful-restart", b.GracefulRestart, "Advertise graceful restart, so peers keep this node's routes across an agent crash or upgrade.")
	fs.IntVar(&b.RestartTime, "bgp-restart-time", b.RestartTime, "Graceful restart time in seconds.")
	fs.StringVar(&b.NextHop, "bgp-nexthop", b.NextHop, "Next hop of IPv4 routes (default: each session's local address); makes IPv6 sessions carry IPv4 too.")
	fs.StringVar(&b.NextHop6, "bgp-nexthop6", b.NextHop6, "Next hop of IPv6 routes (default: each session's local address); makes IPv4 sessions carry IPv6 too.")
	fs.StringArrayVar(&b.PeerSelectors, "bgp-peer-node-selector", b.PeerSelectors, "Limit a peer to nodes whose labels match: address=label-selector, e.g. 10.0.0.1=rack=a (repeatable, or ';'-separated; env bgp_peer_node_selectors). Peers without a selector peer with every node.")
	fs.StringVar(&b.Annotations, "annotations", b.Annotations, "Read per-node BGP settings from Node annotations under this prefix, e.g. kube-vip.io (env annotation).")
}

func badBGP(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...)
}

func parseAddrFlag(name, v string) (netip.Addr, error) {
	if v == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		return a, badBGP("--%s %q is not an IP address", name, v)
	}
	return a.Unmap(), nil
}

// firstIPv4 returns the first IPv4 address of the interface.
func firstIPv4(name string) (netip.Addr, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return netip.Addr{}, badBGP("--bgpRouterInterface (bgp_routerinterface) %q: %v", name, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, badBGP("--bgpRouterInterface (bgp_routerinterface) %q: %v", name, err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap().Is4() {
				return ip.Unmap(), nil
			}
		}
	}
	return netip.Addr{}, badBGP("--bgpRouterInterface (bgp_routerinterface) %q has no IPv4 address", name)
}

// Static builds the configuration the flags describe, before node
// annotations, and the passwords from the password file.
func (b *BGPConfig) Static() (bgpconfig.Config, bgpconfig.Passwords, error) {
	var c bgpconfig.Config
	var pw bgpconfig.Passwords
	var err error
	if b.RouterID != "" && b.RouterInterface != "" {
		return c, pw, badBGP("--bgpRouterID (bgp_routerid) and --bgpRouterInterface (bgp_routerinterface) are both set: choose one")
	}
	if b.PeerAddress == "" && b.PeerPass != "" {
		return c, pw, badBGP("--peerPass (bgp_peerpass) is set without --peerAddress (bgp_peeraddress); put per-peer passwords in --bgppeers or --bgp-password-file")
	}
	if b.PeerAddress == "" && b.Multihop {
		return c, pw, badBGP("--multihop (bgp_multihop) is set without --peerAddress (bgp_peeraddress); set multihop per peer in --bgppeers")
	}
	c.AS = b.LocalAS
	if c.RouterID, err = parseAddrFlag("bgpRouterID", b.RouterID); err != nil {
		return c, pw, err
	}
	if b.RouterInterface != "" {
		if c.RouterID, err = firstIPv4(b.RouterInterface); err != nil {
			return c, pw, err
		}
	}
	if c.SourceIP, err = parseAddrFlag("sourceIP", b.SourceIP); err != nil {
		return c, pw, err
	}
	if !c.RouterID.IsValid() && c.SourceIP.Is4() {
		c.RouterID = c.SourceIP
	}
	c.SourceInterface = b.SourceIF
	if c.NextHop4, err = parseAddrFlag("bgp-nexthop", b.NextHop); err != nil {
		return c, pw, err
	}
	if c.NextHop6, err = parseAddrFlag("bgp-nexthop6", b.NextHop6); err != nil {
		return c, pw, err
	}
	if b.HoldTime < 0 || b.Keepalive < 0 || b.ConnectRetry < 0 || b.RestartTime < 0 {
		return c, pw, badBGP("BGP timers must not be negative")
	}
	c.HoldTime = time.Duration(b.HoldTime) * time.Second
	c.KeepaliveInterval = time.Duration(b.Keepalive) * time.Second
	c.ConnectRetry = time.Duration(b.ConnectRetry) * time.Second
	c.ListenPort = int32(b.ListenPort)
	if b.ListenPort < -1 || b.ListenPort == 0 || b.ListenPort > 65535 {
		return c, pw, badBGP("--bgp-listen-port %d must be -1 or 1-65535", b.ListenPort)
	}
	c.GracefulRestart = b.GracefulRestart
	c.RestartTime = time.Duration(b.RestartTime) * time.Second
	c.LocalPref = b.LocalPref
	if c.Communities, err = bgpconfig.ParseCommunities(b.Communities); err != nil {
		return c, pw, fmt.Errorf("%w: --bgp-communities: %v", ErrConfig, err)
	}
	if c.LargeCommunities, err = bgpconfig.ParseLargeCommunities(b.LargeCommunities); err != nil {
		return c, pw, fmt.Errorf("%w: --bgp-large-communities: %v", ErrConfig, err)
	}
	if c.Peers, err = bgpconfig.ParsePeers(b.Peers); err != nil {
		return c, pw, fmt.Errorf("%w: --bgppeers (bgp_peers): %v", ErrConfig, err)
	}
	if b.PeerAddress != "" {
		a, err := netip.ParseAddr(b.PeerAddress)
		if err != nil {
			return c, pw, badBGP("--peerAddress (bgp_peeraddress) %q is not an IP address", b.PeerAddress)
		}
		p := bgpconfig.Peer{Address: a.Unmap(), AS: b.PeerAS, Password: b.PeerPass}
		if b.Multihop {
			p.MultihopTTL = bgpconfig.DefaultMultihopTTL
		}
		c.Peers = append([]bgpconfig.Peer{p}, c.Peers...)
	}
	if b.PasswordFile != "" {
		if pw, err = bgpconfig.LoadPasswords(b.PasswordFile); err != nil {
			return c, pw, fmt.Errorf("%w: --bgp-password-file: %v", ErrConfig, err)
		}
	}
	return c, pw, nil
}

// Selectors parses --bgp-peer-node-selector.
func (b *BGPConfig) Selectors() (bgpconfig.PeerSelectors, error) {
	sel, err := bgpconfig.ParsePeerSelectors(b.PeerSelectors)
	if err != nil {
		return nil, fmt.Errorf("%w: --bgp-peer-node-selector (bgp_peer_node_selectors): %v", ErrConfig, err)
	}
	return sel, nil
}

// CheckBGPEnv refuses environment variables that look like BGP settings but
// are not ones vip reads, so a typo or an unsupported kube-vip setting stops
// the agent instead of being ignored. env is the environment the rest of
// the configuration is read from (ApplyEnv runs this in BGP mode).
func CheckBGPEnv(env Environment) error {
	for _, name := range env.Names() {
		if !strings.HasPrefix(name, "bgp_") || name == "bgp_enable" {
			continue
		}
		if _, ok := bgpEnvFlags[name]; ok {
			continue
		}
		if _, ok := compat.Lookup(compat.Env, name); ok {
			continue // kube-vip's: accepted, or refused by applyEnv
		}
		return badBGP("environment %s is not a BGP setting vip knows (see docs/bgp.md)", name)
	}
	return nil
}

// Validate checks the BGP settings at start (and `vip-agent manifest` checks
// the settings it writes with it). With --annotations the node may still
// supply the AS, router ID and peers, so only the rest is checked.
func (b *BGPConfig) Validate() error {
	base, pw, err := b.Static()
	if err != nil {
		return err
	}
	if _, err := b.Selectors(); err != nil {
		return err
	}
	if b.Annotations != "" {
		if !base.RouterID.IsValid() {
			base.RouterID = netip.MustParseAddr("192.0.2.1") // placeholder: the src-ip annotation may set it
		}
		if len(base.Peers) == 0 {
			base.Peers = []bgpconfig.Peer{{Address: netip.MustParseAddr("192.0.2.2"), AS: 1}}
		}
	}
	if _, err := bgpconfig.Resolve(base, pw, nil, nil, nil); err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	return nil
}

// PlainPasswordSources names the settings that carry a BGP password in the
// Pod spec (flags or kube-vip's environment) rather than in a Secret.
func (b *BGPConfig) PlainPasswordSources(peers []bgpconfig.Peer) []string {
	var out []string
	if b.PeerPass != "" {
		out = append(out, "--peerPass (bgp_peerpass)")
	}
	for _, p := range peers {
		if p.Password != "" && b.Peers != "" {
			out = append(out, "--bgppeers (bgp_peers)")
			break
		}
	}
	return out
}
