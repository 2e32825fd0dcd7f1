package election

import (
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	v1 "k8s.io/api/core/v1"

	"github.com/vip-lb/vip/pkg/lbsvc"
	"github.com/vip-lb/vip/pkg/liveness"
)

// A silent link. In link mode a node that hears none of its peers while
// the API says they exist counts itself cut off and fences (linkFenceLoop).
// That is right for one node cut off, and wrong when the link carries
// nothing between any nodes: a host firewall dropping the link port, or
// agents holding different keys, would make every node fence and every
// address go dark. So each node reports on its heartbeat Lease whether it
// hears any peer (AnnotationLinkSilent, written only when it changes), and
// when at most one alive member hears anyone while there are at least two,
// the link is not working for the cluster: no node fences for silence
// (silentLink.Connected) and every node judges its peers by their
// membership renewals (linkJudge, judge: the timing a lease-mode node uses
// for a link-mode peer), so a failed node's addresses move after a
// membership timeout (30 s up to 8 nodes) instead of 0.4 s. Every node
// says so: a Warning Event on its Node, a log line, vip_agent_link_silent.
//
// "At most one" rather than "none": with a default-deny firewall opened one
// node at a time (ufw allows outgoing traffic), the first node opened hears
// everyone while nobody hears it; that is no working link either.
//
// When two alive members hear someone, the normal rules hold: a node that
// hears nobody is the one cut off and fences, and its peers judge it dead
// from its report (reportsCutLocked), also when they still hear it (its
// receive path alone is cut), so its addresses move instead of going dark.

// AnnotationLinkSilent is "true" on a link-mode node's heartbeat while it
// hears none of its peers on the link.
const AnnotationLinkSilent = "vip.io/link-silent"

// Node Event reasons of a silent link.
const (
	ReasonLinkSilent     = "LinkSilent"
	ReasonLinkHeard      = "LinkHeard"
	ReasonLinkAuthFailed = "LinkAuthFailed"
)

const (
	// silentAfter is how long a node must hear none of its peers before
	// it reports silence: well above the link timeout, so a node cut off
	// has fenced long before, and a loss of a few datagrams says nothing.
	silentAfter = time.Second
	// silentCheck is how often silence is checked.
	silentCheck = 100 * time.Millisecond
	// silentGrace: after the link was silent for every node (or after
	// start), a peer's silence report counts only this much later; the
	// reports of nodes that hear again are being written meanwhile.
	silentGrace = 2 * time.Second
	// silentHold: a peer's silence report counts once this node has seen
	// it for this long: a node that hears again clears its report within
	// a renewal check (a starting node may report silence until the
	// others' first heartbeats arrive).
	silentHold = time.Second
	// authWarnEvery rate-limits the Warning about datagrams signed with
	// another key.
	authWarnEvery = 5 * time.Minute
)

// silence is the state of the silent-link rule. all is read under e.mu
// and without it (silentLink); the other fields are guarded by e.mu.
type silence struct {
	all       atomic.Bool          // at most one alive member hears anyone: judge by the API
	inner     Link                 // the link itself (Options.Link before wrapLink)
	self      bool                 // this node's report: it hears none of its peers
	start     time.Time            // when the check started
	linkSince time.Time            // when the link last started working for the cluster
	reported  map[string]time.Time // peers reporting silence: since when this node sees it
	buf       []peerReport         // checkSilence's, reused
	badKey    uint64               // the link's BadKey count last seen
	warnedKey time.Time            // when datagrams with another key were last warned about
	warnedAt  uint64               // the BadKey count then
}

// peerReport is a link member's silence report.
type peerReport struct {
	node   string
	silent bool
}

// silentLink is the Elector's view of the link: connected while the link
// is, or while the link is silent for every node (nobody fences for it).
type silentLink struct {
	Link
	all *atomic.Bool
}

// Connected reports whether this node may count itself on the link.
func (l silentLink) Connected() bool { return l.Link.Connected() || l.all.Load() }

// wrapLink puts the silent-link rule between the Elector and its link.
func (e *Elector) wrapLink() {
	if e.o.Link == nil {
		return
	}
	e.silence.inner = e.o.Link
	e.o.Link = silentLink{Link: e.o.Link, all: &e.silence.all}
}

// reportsCutLocked reports whether a peer says it hears nobody while the
// link works for the cluster and this node hears someone (a node that
// hears nobody cannot tell who is cut), long enough after the link started
// working that the report is not one being cleared. e.mu must be held.
func (e *Elector) reportsCutLocked(node string, st *nodeState, now time.Time) bool {
	s := &e.silence
	since, ok := s.reported[node]
	return st.linkSilent && ok && now.Sub(since) >= silentHold &&
		!s.self && !s.linkSince.IsZero() && now.Sub(s.linkSince) >= silentGrace
}

// checkSilence publishes this node's silence when it changes, decides
// whether the link is silent for every node, and says so when that
// changes.
func (e *Elector) checkSilence() {
	now := e.o.Clock.Now()
	s := &e.silence
	e.mu.Lock()
	if s.start.IsZero() {
		s.start, s.linkSince = now, now
	}
	start := s.start
	// At rest this allocates nothing: the buffer is reused and no peer
	// reports silence.
	peers := s.buf[:0]
	for node, st := range e.nodes {
		if node == e.self || st.gone || !st.link.IsValid() {
			continue
		}
		peers = append(peers, peerReport{node, st.linkSilent})
		if _, ok := s.reported[node]; st.linkSilent && !ok {
			if s.reported == nil {
				s.reported = map[string]time.Time{}
			}
			s.reported[node] = now
		}
	}
	for node := range s.reported {
		if st := e.nodes[node]; st == nil || st.gone || !st.linkSilent {
			delete(s.reported, node)
		}
	}
	s.buf = peers
	e.mu.Unlock()

	self := now.Sub(start) >= silentAfter && e.hearsNobody(peers)
	// Count the alive members that hear, up to two (then the link works:
	// at rest the first fresh peer ends the count).
	members, hearing := 1, 0
	if !self {
		hearing++
	}
	for _, p := range peers {
		if hearing >= 2 {
			break
		}
		if !e.MemberFresh(p.node) {
			continue // gone for the API: its report means nothing
		}
		members++
		if !p.silent {
			hearing++
		}
	}
	all := members >= 2 && hearing <= 1

	e.mu.Lock()
	selfChanged := self != s.self
	s.self = self
	was := s.all.Load()
	if all != was {
		s.all.Store(all)
		if !all {
			s.linkSince = now
		}
	}
	e.mu.Unlock()
	if selfChanged {
		v := ""
		if self {
			v = "true"
		}
		e.Publish(map[string]string{AnnotationLinkSilent: v}) // written by the next renewal check
		e.log.Info("link silence of this node changed", "hearsNoPeer", self, "peers", len(peers), "port", e.linkPort())
	}
	e.checkAuthFailures(now)
	e.recoverSeen()
	if all == was {
		return
	}
	e.sayLinkSilent(all, members, hearing)
	e.evaluate()
}

// recoverSeen unfences a fenced node whose recovery renewal the watch has
// already delivered, as observeHeartbeat does when that renewal arrives:
// the watch may deliver it before renew has recorded its version, and the
// next chance would then be the next membership renewal, 10 s or more
// later (seen when the link fell silent for every node).
func (e *Elector) recoverSeen() {
	e.mu.Lock()
	st := e.nodes[e.self]
	ok := st != nil && e.unfenceIfCaughtUpLocked(st.rv)
	e.mu.Unlock()
	if !ok {
		return
	}
	e.log.Info("heartbeat renewal seen through the watch, unfencing")
	e.evaluate()
}

// hearsNobody reports whether this node has heard none of peers for
// silentAfter while its link says it is not connected (a link whose
// receiver is behind counts as connected: the datagrams wait unread).
func (e *Elector) hearsNobody(peers []peerReport) bool {
	if len(peers) == 0 || e.silence.inner.Connected() {
		return false
	}
	for _, p := range peers {
		if age, ok := e.silence.inner.Age(p.node); ok && age < silentAfter {
			return false
		}
	}
	return true
}

// sayLinkSilent logs, counts and records on the Node a change of the
// cluster's link silence.
func (e *Elector) sayLinkSilent(all bool, members, hearing int) {
	if !all {
		e.metrics.linkSilent.Set(0)
		e.log.Info("nodes hear each other on the link again: link liveness resumes", "hearing", hearing)
		e.event(v1.EventTypeNormal, ReasonLinkHeard, "Nodes hear each other on the link again (UDP %s): link liveness resumes", e.linkPort())
		return
	}
	e.metrics.linkSilent.Set(1)
	why := e.linkSilentWhy()
	e.log.Info("no node hears its peers on the link: judging nodes by their heartbeat Lease renewals, nobody fences for silence",
		"members", members, "hearing", hearing, "port", e.linkPort(), "interface", e.o.LinkInterface, "address", e.o.LinkAddress, "likely", why)
	e.event(v1.EventTypeWarning, ReasonLinkSilent,
		"No node hears its peers on the link (UDP %s on %s): nodes are judged by their heartbeat Lease renewals instead, so a failed node's addresses move after up to a membership timeout (30 s up to 8 nodes), not 0.4 s; no node stops announcing for it. Likely: %s",
		e.linkPort(), e.linkWhere(), why)
}

// linkSilentWhy names the likely causes of a silent link.
func (e *Elector) linkSilentWhy() string {
	e.mu.Lock()
	bad := e.silence.badKey
	e.mu.Unlock()
	if bad > 0 {
		return fmt.Sprintf("agents holding different keys (%d datagrams from nodes' link addresses failed authentication): restart every agent after changing the key Secret; or a host firewall dropping UDP %s between the nodes", bad, e.linkPort())
	}
	return fmt.Sprintf("a host firewall dropping UDP %s between the nodes (open it on every node), or agents holding different keys (restart every agent after changing the key Secret)", e.linkPort())
}

// checkAuthFailures counts the datagrams from members' link addresses that
// failed authentication, and warns about them at most every authWarnEvery.
func (e *Elector) checkAuthFailures(now time.Time) {
	st, ok := e.silence.inner.(interface{ Stats() liveness.Stats })
	if !ok {
		return
	}
	n := st.Stats().BadKey
	e.mu.Lock()
	s := &e.silence
	delta := n - s.badKey
	warn := n > s.warnedAt && (s.warnedKey.IsZero() || now.Sub(s.warnedKey) >= authWarnEvery)
	s.badKey = n
	if warn {
		s.warnedKey, s.warnedAt = now, n
	}
	e.mu.Unlock()
	if delta > 0 {
		e.metrics.linkBadKey.Add(float64(delta))
	}
	if !warn {
		return
	}
	e.log.Info("datagrams from nodes' link addresses fail authentication: the agents hold different keys", "count", n, "port", e.linkPort())
	e.event(v1.EventTypeWarning, ReasonLinkAuthFailed,
		"%d datagrams on UDP %s from nodes' link addresses failed authentication and were ignored: the agents most likely hold different keys (restart every agent after changing the key Secret)",
		n, e.linkPort())
}

// event records an Event on this node's Node (when a Recorder is set).
func (e *Elector) event(typ, reason, msg string, args ...any) {
	if e.o.Recorder == nil {
		return
	}
	ref := lbsvc.NodeRef(e.self)
	e.o.Recorder.Eventf(ref, typ, reason, msg, args...)
}

// linkPort is the port of this node's link address ("?" when unknown).
func (e *Elector) linkPort() string {
	ap, err := netip.ParseAddrPort(e.o.LinkAddress)
	if err != nil {
		return "?"
	}
	return fmt.Sprint(ap.Port())
}

// linkWhere is the interface and address the link heartbeats use.
func (e *Elector) linkWhere() string {
	if e.o.LinkInterface == "" {
		return e.o.LinkAddress
	}
	return e.o.LinkInterface + ", " + e.o.LinkAddress
}
