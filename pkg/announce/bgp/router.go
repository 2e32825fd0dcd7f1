package bgp

import (
	"context"
	"net/netip"
	"time"

	"github.com/vip-lb/vip/pkg/bgpconfig"
)

// router is what the speaker needs from a BGP implementation; gobgpRouter
// is the real one and tests use a fake.
type router interface {
	// Start starts the BGP instance and installs the import policy that
	// rejects every route learned from peers.
	Start(ctx context.Context, g globalSpec) error
	// Stop closes every session with a NOTIFICATION and stops the instance;
	// Start may be called again afterwards.
	Stop(ctx context.Context) error
	AddPeer(ctx context.Context, p peerSpec) error
	DeletePeer(ctx context.Context, addr netip.Addr) error
	// AddPath advertises a path and returns its UUID. Adding a path for a
	// prefix that has one replaces it.
	AddPath(ctx context.Context, p pathSpec) ([]byte, error)
	// DeletePath withdraws the path with uuid.
	DeletePath(ctx context.Context, uuid []byte) error
	// DeleteAllPaths withdraws every path this instance originated.
	DeleteAllPaths(ctx context.Context) error
	// WatchPeers calls fn for every session state change until ctx ends.
	WatchPeers(ctx context.Context, fn func(peerEvent)) error
}

// globalSpec is the instance-wide part of the configuration.
type globalSpec struct {
	AS         uint32
	RouterID   netip.Addr
	ListenPort int32
}

// peerSpec is one neighbour with the session settings that apply to it.
type peerSpec struct {
	bgpconfig.Peer
	SourceIP        netip.Addr
	SourceInterface string
	HoldTime        time.Duration
	Keepalive       time.Duration
	ConnectRetry    time.Duration
	GracefulRestart bool
	RestartTime     time.Duration
	// IPv4 and IPv6 say which unicast families the session carries.
	IPv4, IPv6 bool
}

// pathSpec is one host route with its attributes.
type pathSpec struct {
	Prefix netip.Prefix
	// NextHop is the next hop; the zero value means the local address of
	// each session.
	NextHop          netip.Addr
	Communities      []uint32
	LargeCommunities []bgpconfig.LargeCommunity
	LocalPref        uint32
}

// peerEvent is a session state change.
type peerEvent struct {
	Peer netip.Addr
	// State is the session state in lower case: idle, connect, active,
	// opensent, openconfirm, established.
	State string
	// Local is the session's local address, when known.
	Local netip.Addr
}

// Up reports whether the session is established.
func (e peerEvent) Up() bool { return e.State == stateEstablished }

const stateEstablished = "established"
