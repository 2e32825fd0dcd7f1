package bgpconfig

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// ErrInvalid marks a BGP setting the agent refuses to start with.
var ErrInvalid = errors.New("invalid BGP configuration")

// DefaultPort is the TCP port of a BGP peer when none is given.
const DefaultPort = 179

// Defaults applied by Config.Normalize to zero fields.
const (
	DefaultHoldTime     = 90 * time.Second
	DefaultKeepalive    = 30 * time.Second
	DefaultConnectRetry = 5 * time.Second
	DefaultRestartTime  = 120 * time.Second
	// DefaultMultihopTTL is the TTL of a multihop session given as "true".
	DefaultMultihopTTL = 255
)

// Peer is one BGP neighbour.
type Peer struct {
	// Address is the neighbour's address (IPv4 or IPv6).
	Address netip.Addr
	// Port is the neighbour's TCP port; 0 means DefaultPort.
	Port uint16
	// AS is the neighbour's autonomous system number.
	AS uint32
	// Password enables TCP MD5 signatures on the session when not empty.
	Password string
	// MultihopTTL, when not zero, allows an eBGP session over several hops
	// with this TTL (ebgp-multihop).
	MultihopTTL uint8
}

// Key identifies a peer in maps and log lines.
func (p Peer) Key() string { return p.Address.String() }

// LargeCommunity is an RFC 8092 community: global:local1:local2.
type LargeCommunity struct {
	Global, Local1, Local2 uint32
}

// String formats c as "global:local1:local2".
func (c LargeCommunity) String() string {
	return fmt.Sprintf("%d:%d:%d", c.Global, c.Local1, c.Local2)
}

// Config is the BGP configuration of one node.
type Config struct {
	// AS is this node's autonomous system number.
	AS uint32
	// RouterID is the BGP identifier; it must be an IPv4 address.
	RouterID netip.Addr
	// ListenPort is the port the speaker accepts sessions on; -1 (the
	// default) means it only dials out.
	ListenPort int32
	// SourceIP is the local address of every session of its family
	// (optional); sessions of the other family pick theirs by route.
	SourceIP netip.Addr
	// SourceInterface binds every session to this interface (optional).
	SourceInterface string
	// NextHop4 and NextHop6 are the next hops of advertised IPv4 and IPv6
	// routes. Unset means the local address of each session (the source
	// address when SourceIP is set), which is right for every peer even when
	// peers sit on different subnets.
	NextHop4, NextHop6 netip.Addr
	// HoldTime, KeepaliveInterval and ConnectRetry are the session timers
	// (whole seconds).
	HoldTime, KeepaliveInterval, ConnectRetry time.Duration
	// GracefulRestart advertises the graceful restart capability with
	// RestartTime, so a peer keeps this node's routes while it restarts after
	// a crash. A graceful stop still withdraws everything at once.
	GracefulRestart bool
	RestartTime     time.Duration
	// Communities and LargeCommunities are attached to every route.
	Communities      []uint32
	LargeCommunities []LargeCommunity
	// LocalPref, when not zero, is the LOCAL_PREF of every route (sent to
	// iBGP peers only, as BGP requires).
	LocalPref uint32
	// Peers are the neighbours.
	Peers []Peer
	// Deselected are configured peers that peer node selectors leave out
	// for this node (see PeerSelectors.Select). With some, an empty Peers
	// is valid: the node has no session.
	Deselected []netip.Addr
}

// Normalize fills zero timers with their defaults and returns c.
func (c Config) Normalize() Config {
	if c.HoldTime == 0 {
		c.HoldTime = DefaultHoldTime
	}
	if c.KeepaliveInterval == 0 {
		c.KeepaliveInterval = c.HoldTime / 3
		if c.KeepaliveInterval < time.Second {
			c.KeepaliveInterval = time.Second
		}
	}
	if c.ConnectRetry == 0 {
		c.ConnectRetry = DefaultConnectRetry
	}
	if c.GracefulRestart && c.RestartTime == 0 {
		c.RestartTime = DefaultRestartTime
	}
	if c.ListenPort == 0 {
		c.ListenPort = -1
	}
	c.Peers = slices.Clone(c.Peers)
	for i := range c.Peers {
		if c.Peers[i].Port == 0 {
			c.Peers[i].Port = DefaultPort
		}
	}
	return c
}

// Validate checks a normalized configuration. The error is one line that
// names the offending setting.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
	}
	switch {
	case c.AS == 0:
		return bad("local AS is not set (--localAS / bgp_as, or the node-asn annotation)")
	case !c.RouterID.IsValid():
		return bad("router ID is not set (--bgpRouterID / bgp_routerid, --bgpRouterInterface / bgp_routerinterface, or the src-ip annotation)")
	case !c.RouterID.Is4() || c.RouterID.IsUnspecified():
		return bad("router ID %s must be a non-zero IPv4 address", c.RouterID)
	case len(c.Peers) == 0 && len(c.Deselected) == 0:
		return bad("no peers (--bgppeers / bgp_peers, --peerAddress / bgp_peeraddress, or the peer-ip annotation)")
	case c.ListenPort < -1 || c.ListenPort == 0 || c.ListenPort > 65535:
		return bad("listen port %d must be -1 (do not listen) or 1-65535", c.ListenPort)
	case c.SourceIP.IsValid() && (c.SourceIP.IsUnspecified() || c.SourceIP.IsMulticast()):
		return bad("source address %s is not a unicast address", c.SourceIP)
	case c.NextHop4.IsValid() && !c.NextHop4.Is4():
		return bad("IPv4 next hop %s is not an IPv4 address", c.NextHop4)
	case c.NextHop6.IsValid() && (!c.NextHop6.Is6() || c.NextHop6.Is4In6()):
		return bad("IPv6 next hop %s is not an IPv6 address", c.NextHop6)
	}
	if err := checkTimers(c.HoldTime, c.KeepaliveInterval, c.ConnectRetry); err != nil {
		return bad("%v", err)
	}
	if c.GracefulRestart && (c.RestartTime < time.Second || c.RestartTime > 4095*time.Second || c.RestartTime%time.Second != 0) {
		return bad("graceful restart time %v must be whole seconds between 1s and 4095s", c.RestartTime)
	}
	seen := map[netip.Addr]bool{}
	for _, p := range c.Peers {
		if err := p.validate(); err != nil {
			return bad("%v", err)
		}
		if seen[p.Address] {
			return bad("peer %s is listed twice", p.Address)
		}
		seen[p.Address] = true
	}
	return nil
}

func (p Peer) validate() error {
	switch {
	case !p.Address.IsValid() || p.Address.IsUnspecified() || p.Address.IsMulticast():
		return fmt.Errorf("peer address %q is not a unicast address", p.Address)
	case p.Address.Zone() != "":
		return fmt.Errorf("peer %s: zoned addresses are not supported", p.Address)
	case p.AS == 0:
		return fmt.Errorf("peer %s: AS must be 1-4294967295", p.Address)
	case len(p.Password) > 80:
		return fmt.Errorf("peer %s: TCP MD5 passwords are at most 80 bytes", p.Address)
	}
	return nil
}

func checkTimers(hold, keepalive, retry time.Duration) error {
	whole := func(d time.Duration) bool { return d%time.Second == 0 }
	switch {
	case !whole(hold) || !whole(keepalive) || !whole(retry):
		return fmt.Errorf("BGP timers are whole seconds (hold %v, keepalive %v, connect retry %v)", hold, keepalive, retry)
	case hold < 3*time.Second || hold > 65535*time.Second:
		return fmt.Errorf("hold time %v must be between 3s and 65535s", hold)
	case keepalive < time.Second || keepalive >= hold:
		return fmt.Errorf("keepalive interval %v must be at least 1s and below the hold time %v", keepalive, hold)
	case retry < time.Second:
		return fmt.Errorf("connect retry %v must be at least 1s", retry)
	}
	return nil
}
