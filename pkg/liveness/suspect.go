package liveness

import (
	"net/netip"
	"time"
)

// A neighbour silent for Timeout is not dead at once. Two things can make
// a live neighbour look silent, and neither must move addresses:
//
//   - this node itself ran late (starved of CPU, paused): the packets it
//     missed wait unread in its socket, and judging before reading them
//     would blame the neighbour. The loop's own ticks show it: a tick more
//     than two intervals after the previous one means this node was not
//     running; datagrams still queued in the socket at a tick (Linux:
//     SIOCINQ) mean its receive goroutine is behind. At such a tick nobody
//     is suspected or declared dead (checkStallLocked); the next tick on
//     time with the socket drained judges. Queued datagrams also prove
//     that this node hears the link, so it does not count itself cut off;
//     a late tick alone does not postpone that judgement (a node that
//     truly hears nothing must stop announcing before its peers take
//     over);
//   - only the path from the neighbour to this node fails. The suspect is
//     first asked about, SWIM-style: this node sends a suspect packet to
//     every member; the neighbour refutes it, and any member that heard it
//     since answers with an alive notice carrying the newer stamp, which
//     clears the suspicion (vouchLocked). Only a suspicion nobody clears
//     within SuspectFor makes the neighbour dead.
//
// A real death therefore takes Timeout + SuspectFor (300 + 100 ms by
// default) to be declared, and costs N suspect packets once, plus the
// answers of whoever still hears the node.

// outPacket is a packet Receive sends after it unlocks: to one address, or
// to every member when to is not valid.
type outPacket struct {
	Packet
	to netip.AddrPort
}

// checkStallLocked reports whether this node is behind: its loop ran late
// (a tick more than two intervals after the previous one), or its receive
// goroutine is behind (backlog: datagrams wait unread in the socket); and
// whether it ran late. m.mu must be held.
func (m *Monitor) checkStallLocked(now time.Time, backlog bool) (behind, late bool) {
	late = m.lateLocked(now)
	if late || backlog {
		m.stats.Stalls++
		m.log.V(2).Info("this node's liveness loop ran late or has unread heartbeats: judging nobody at this tick",
			"late", now.Sub(m.lastTick)-m.o.Interval, "backlog", backlog)
	}
	m.lastTick = now
	return late || backlog, late
}

// lateLocked reports whether the loop ran late: now is more than two
// intervals after the last tick. m.mu must be held.
func (m *Monitor) lateLocked(now time.Time) bool {
	return !m.lastTick.IsZero() && now.Sub(m.lastTick) > 2*m.o.Interval
}

// A tick that finds datagrams unread judges nobody, but that backlog is
// usually one datagram that arrived a moment before the tick (at 100
// members in one process, 3 % of the ticks at rest and a third of the
// observers' ticks around a death). Waiting for the next tick added an
// interval to the declaration each time. Instead the loop judges again
// every Interval/rejudgeDivisor, at most maxRejudges times, until the
// socket is drained: the rule stays "never judge with datagrams unread",
// it only stops costing a whole interval. A tick that ran late is not
// judged again before the next tick (the loop itself was starved).
const (
	rejudgeDivisor = 10
	maxRejudges    = 5
)

// tickSlackDivisor: a suspicion is judged at the ticks; one raised at a
// tick that ran a few ms late would otherwise miss the tick SuspectFor
// later by that much and wait a whole extra interval. A suspicion that has
// lasted SuspectFor less Interval/tickSlackDivisor (90 ms at the
// defaults) is therefore long enough.
const tickSlackDivisor = 5

// rejudge judges the neighbours again after a tick put its judgements off
// because datagrams waited unread. It sends nothing and does not count as
// a tick. It reports whether datagrams still wait unread (judge again
// later); a loop that ran late since its last tick judges nobody.
func (m *Monitor) rejudge() bool {
	now := m.o.Clock.Now()
	backlog := m.backlog()
	m.mu.Lock()
	late := m.lateLocked(now)
	m.mu.Unlock()
	m.judge(now, backlog || late, backlog)
	return backlog && !late
}

// suspectLocked starts suspecting p when it has been silent for Timeout
// and was not yet suspected, unless this node is behind, returning the
// suspect packet to send to every member; it drops the suspicion of a
// peer no longer silent. m.mu must be held.
func (m *Monitor) suspectLocked(node string, p *peer, now time.Time, behind bool) (Packet, bool) {
	base := later(later(p.heard, p.watchFrom), p.vouched)
	if now.Sub(base) < m.o.Timeout {
		m.clearSuspicionLocked(p)
		return Packet{}, false
	}
	if behind || !p.suspectAt.IsZero() {
		return Packet{}, false
	}
	p.suspectAt = now
	m.stats.Suspicions++
	at := p.last
	if p.belief.at.after(at) {
		at = p.belief.at
	}
	m.log.V(1).Info("peer silent on the link: asking the others", "node", node, "timeout", m.o.Timeout)
	return Packet{Kind: KindSuspect, Subject: node, SubjectInc: at.inc, SubjectSeq: at.seq}, true
}

// clearSuspicionLocked drops a suspicion of p. m.mu must be held.
func (m *Monitor) clearSuspicionLocked(p *peer) {
	if !p.suspectAt.IsZero() {
		p.suspectAt = time.Time{}
		m.stats.Cleared++
	}
}

// vouchLocked answers a suspect packet about another member: when this
// node heard the subject after the suspect's stamp and within Timeout, it
// tells the sender (an alive notice with the newer stamp). m.mu must be
// held.
func (m *Monitor) vouchLocked(p Packet, now time.Time) (outPacket, bool) {
	subj, from := m.peers[p.Subject], m.peers[p.From]
	if subj == nil || from == nil || !subj.belief.alive || subj.heard.IsZero() ||
		now.Sub(subj.heard) >= m.o.Timeout || !subj.last.after(stamp{p.SubjectInc, p.SubjectSeq}) {
		return outPacket{}, false
	}
	return outPacket{
		Packet: Packet{Kind: KindNotice, Subject: p.Subject, Alive: true, SubjectInc: subj.last.inc, SubjectSeq: subj.last.seq},
		to:     from.addr,
	}, true
}
