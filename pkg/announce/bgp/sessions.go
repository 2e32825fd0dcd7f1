package bgp

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"sort"
	"time"

	"github.com/vip-lb/vip/pkg/bgpconfig"
)

// peerSpecs derives the sessions of c. A session carries the family of its
// transport, and the other family too when c has a next hop for it
// (MP-BGP across families needs an explicit next hop).
func peerSpecs(c bgpconfig.Config) map[netip.Addr]peerSpec {
	out := make(map[netip.Addr]peerSpec, len(c.Peers))
	for _, p := range c.Peers {
		v4 := p.Address.Is4()
		src := c.SourceIP
		if src.IsValid() && src.Is4() != v4 {
			src = netip.Addr{} // the source address is for sessions of its family
		}
		out[p.Address] = peerSpec{
			Peer: p, SourceIP: src, SourceInterface: c.SourceInterface,
			HoldTime: c.HoldTime, Keepalive: c.KeepaliveInterval, ConnectRetry: c.ConnectRetry,
			GracefulRestart: c.GracefulRestart, RestartTime: c.RestartTime,
			IPv4: v4 || c.NextHop4.IsValid(), IPv6: !v4 || c.NextHop6.IsValid(),
		}
	}
	return out
}

// syncPeersLocked makes the sessions match want; callers hold s.mu (or
// own s exclusively).
func (s *Speaker) syncPeersLocked(ctx context.Context, want map[netip.Addr]peerSpec) error {
	var errs []error
	for a, have := range s.peers {
		if w, ok := want[a]; ok && reflect.DeepEqual(w, have) {
			continue
		}
		s.hush(a)
		if err := s.r.DeletePeer(ctx, a); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(s.peers, a)
		s.forgetPeer(a)
		s.log.Info("BGP peer removed", "peer", a)
	}
	keys := make([]netip.Addr, 0, len(want))
	for a := range want {
		keys = append(keys, a)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].Less(keys[j]) })
	for _, a := range keys {
		if _, ok := s.peers[a]; ok {
			continue
		}
		p := want[a]
		s.unhush(a)
		if err := s.r.AddPeer(ctx, p); err != nil {
			errs = append(errs, err)
			continue
		}
		s.peers[a] = p
		s.stMu.Lock()
		if _, ok := s.state[a]; !ok {
			s.state[a] = "idle"
		}
		s.stMu.Unlock()
		s.m.up.WithLabelValues(a.String()).Set(0)
		s.log.Info("BGP peer added", "peer", a, "peerAS", p.AS, "port", p.Port,
			"multihopTTL", p.MultihopTTL, "md5", p.Password != "", "ipv4", p.IPv4, "ipv6", p.IPv6)
	}
	return errors.Join(errs...)
}

// onPeerEvent follows session states: log lines, the session metric and
// the OnSessionChange callback.
func (s *Speaker) onPeerEvent(ev peerEvent) {
	s.stMu.Lock()
	prev, known := s.state[ev.Peer]
	if !known {
		s.stMu.Unlock()
		return // a peer already removed
	}
	s.state[ev.Peer] = ev.State
	quiet := s.quiet || s.quietFor[ev.Peer]
	s.stMu.Unlock()

	wasUp := prev == stateEstablished
	switch {
	case ev.Up() && !wasUp:
		s.m.up.WithLabelValues(ev.Peer.String()).Set(1)
		s.log.Info("BGP session established", "peer", ev.Peer, "local", ev.Local)
	case !ev.Up() && wasUp:
		s.m.up.WithLabelValues(ev.Peer.String()).Set(0)
		if quiet {
			s.log.V(1).Info("BGP session closed", "peer", ev.Peer, "state", ev.State)
			return
		}
		s.log.Info("BGP session down", "peer", ev.Peer, "state", ev.State)
	default:
		s.log.V(2).Info("BGP session state", "peer", ev.Peer, "state", ev.State)
		return
	}
	if !ev.Up() {
		// GoBGP holds a dropped session idle for a fixed 5 s before it
		// dials again; a new peer dials at once (within 1-2 s), so the
		// routes are back that much sooner after a router restart or a
		// link flap. Reconnects stay paced by the connect-retry timer.
		go s.redial(ev.Peer)
	}
	if s.onChange != nil {
		s.onChange(ev.Peer, ev.Up(), ev.State)
	}
}

// redialTimeout bounds the re-creation of a peer.
const redialTimeout = 5 * time.Second

// redial re-creates the session with a peer whose session just dropped.
func (s *Speaker) redial(a netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.peers[a]
	if s.closed || !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), redialTimeout)
	defer cancel()
	if err := s.r.DeletePeer(ctx, a); err != nil {
		s.log.V(1).Info("could not re-create the session; GoBGP reconnects by itself", "peer", a, "err", err.Error())
		return
	}
	if err := s.r.AddPeer(ctx, p); err != nil {
		delete(s.peers, a)
		s.forgetPeer(a)
		s.m.fail(OpReconfigure)
		s.log.Error(err, "re-creating the session failed; the peer stays down until the configuration changes", "peer", a)
		return
	}
	s.log.V(1).Info("session re-created to reconnect at once", "peer", a)
}

func (s *Speaker) hush(a netip.Addr) {
	s.stMu.Lock()
	s.quietFor[a] = true
	s.stMu.Unlock()
}

func (s *Speaker) unhush(a netip.Addr) {
	s.stMu.Lock()
	delete(s.quietFor, a)
	s.stMu.Unlock()
}

func (s *Speaker) forgetPeer(a netip.Addr) {
	s.stMu.Lock()
	delete(s.state, a)
	s.stMu.Unlock()
	s.m.up.DeleteLabelValues(a.String())
}

// PeerState is the session state of one configured peer.
type PeerState struct {
	Peer  netip.Addr
	State string
}

// Peers returns the configured peers and their session states, sorted.
func (s *Speaker) Peers() []PeerState {
	s.stMu.Lock()
	defer s.stMu.Unlock()
	out := make([]PeerState, 0, len(s.state))
	for a, st := range s.state {
		out = append(out, PeerState{a, st})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Peer.Less(out[j].Peer) })
	return out
}

func (s *Speaker) setQuiet(q bool) {
	s.stMu.Lock()
	s.quiet = q
	s.stMu.Unlock()
}
