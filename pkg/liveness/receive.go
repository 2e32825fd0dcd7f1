package liveness

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// readLoop receives packets until the socket is closed.
func (m *Monitor) readLoop() {
	buf := make([]byte, MaxPacket+1)
	for {
		n, from, err := m.o.Conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			m.log.V(1).Info("reading the liveness socket", "err", err)
			continue
		}
		m.Receive(buf[:n], from)
	}
}

// Receive handles one datagram from src (exported for tests and fuzzing).
// It reports why a packet was ignored (nil when accepted).
func (m *Monitor) Receive(b []byte, src netip.AddrPort) error {
	p, err := Parse(b, m.o.Key)
	now := m.o.Clock.Now()
	m.mu.Lock()
	if err != nil {
		m.stats.Rejected++
		if errors.Is(err, ErrBadMAC) && m.memberAddrLocked(src) {
			m.stats.BadKey++
		}
		m.mu.Unlock()
		return err
	}
	var out []outPacket
	changed := false
	err = func() error {
		peer := m.peers[p.From]
		switch {
		case peer == nil:
			return fmt.Errorf("%w: %q is no member", ErrRejected, p.From)
		case peer.addr.Addr().Unmap() != src.Addr().Unmap():
			return fmt.Errorf("%w: %q sent from %v, its address is %v", ErrRejected, p.From, src.Addr(), peer.addr.Addr())
		case absDuration(now.Sub(time.UnixMilli(p.SentUnixMilli))) > m.o.MaxSkew:
			return fmt.Errorf("%w: %q's clock is %v off ours (a replay?)", ErrRejected, p.From, now.Sub(time.UnixMilli(p.SentUnixMilli)))
		case !(stamp{p.Incarnation, p.Seq}).after(peer.last):
			return fmt.Errorf("%w: replayed or reordered packet from %q", ErrRejected, p.From)
		}
		st := stamp{p.Incarnation, p.Seq}
		peer.last, peer.heard, m.heardAny = st, now, now
		if b := (belief{alive: true, at: st}); b.newer(peer.belief) {
			if !peer.belief.alive {
				m.log.Info("peer heard on the link again", "node", p.From)
				out = append(out, outPacket{Packet: Packet{Kind: KindNotice, Subject: p.From, Alive: true, SubjectInc: st.inc, SubjectSeq: st.seq}})
				changed = true
			}
			peer.belief = b
		}
		m.clearSuspicionLocked(peer)
		if p.Kind == KindBeat {
			peer.asked = now
		}
		if p.Kind.beat() {
			return nil
		}
		if p.Kind == KindSuspect && p.Subject != m.o.Self {
			if v, ok := m.vouchLocked(p, now); ok {
				out = append(out, v)
			}
			return nil
		}
		if p.Subject == m.o.Self {
			if !p.Alive && p.SubjectInc == m.self.inc && p.SubjectSeq > m.self.seq {
				m.self.seq = p.SubjectSeq // our refutation must be newer still
			}
			if !p.Alive && now.Sub(m.refuted) >= m.o.Interval {
				m.refuted = now
				m.log.Info("told this node is dead on the link: refuting", "by", p.From)
				out = append(out, outPacket{Packet: Packet{Kind: KindNotice, Subject: m.o.Self, Alive: true}})
			}
			return nil
		}
		subj := m.peers[p.Subject]
		if subj == nil {
			return nil
		}
		b := belief{alive: p.Alive, at: stamp{p.SubjectInc, p.SubjectSeq}}
		if b.newer(subj.belief) {
			changed = changed || b.alive != subj.belief.alive
			subj.belief = b
			if b.alive {
				subj.vouched = now // heard by someone since: judge its silence from now
				m.clearSuspicionLocked(subj)
			}
		}
		return nil
	}()
	if err != nil {
		m.stats.Rejected++
	} else {
		m.stats.Received++
	}
	if changed {
		m.rewatchLocked(now)
	}
	m.mu.Unlock()
	for _, n := range out {
		if n.to.IsValid() {
			m.send(n.Packet, []netip.AddrPort{n.to})
			continue
		}
		if n.Subject == m.o.Self {
			// Refutation: our own current stamp, newer than any seen.
			m.mu.Lock()
			n.SubjectInc, n.SubjectSeq = m.self.inc, m.self.seq+1
			m.mu.Unlock()
		}
		m.broadcast(n.Packet)
	}
	if changed {
		m.o.OnChange()
	}
	return err
}

// memberAddrLocked reports whether src is a member's link address. m.mu
// must be held.
func (m *Monitor) memberAddrLocked(src netip.AddrPort) bool {
	for _, p := range m.peers {
		if p.addr.Addr().Unmap() == src.Addr().Unmap() {
			return true
		}
	}
	return false
}

// ErrRejected marks authenticated packets ignored for their content.
var ErrRejected = errors.New("liveness packet ignored")
