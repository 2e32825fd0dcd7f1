package election

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	coordv1 "k8s.io/api/coordination/v1"

	"github.com/vip-lb/vip/pkg/lbsvc"
)

// nodeState is what this observer knows about one node's heartbeat. All
// times are on the observer's clock.
type nodeState struct {
	rv, renew  string         // last seen resourceVersion and renewTime
	health     string         // the node's health URL
	macs       string         // its interfaces' MACs (lbsvc.AnnotationNodeMACs)
	seen       time.Time      // when the heartbeat was first seen or last seen changing
	alive      bool           // as last evaluated (and told to OnNodeChange)
	aliveSince time.Time      // when it last became alive
	changes    uint64         // heartbeat changes seen
	staleAfter uint64         // changes when it last went stale: it revives on the next
	stale      bool           // it has gone stale at least once
	gone       bool           // its heartbeat Lease was deleted
	ready      bool           // its heartbeat says the agent has synced (vip.io/ready)
	link       netip.AddrPort // its link address (link mode)
	linkPeer   bool           // its heartbeat carries AnnotationLink: it runs --liveness=link
	mixWarned  bool           // the mode mismatch with this node was logged
	linkSilent bool           // its heartbeat says it hears none of its peers on the link (silent.go)
}

// observeHeartbeat records a heartbeat from the informer. A heartbeat seen
// for the first time counts as fresh from now, so a restarted observer does
// not judge (and steal from) nodes it has just started watching.
func (e *Elector) observeHeartbeat(l *coordv1.Lease) {
	node := strings.TrimPrefix(l.Name, HeartbeatPrefix)
	renew := ""
	if l.Spec.RenewTime != nil {
		renew = l.Spec.RenewTime.UTC().Format(time.RFC3339Nano)
	}
	now := e.o.Clock.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	st := e.nodes[node]
	changed := st == nil || st.gone || st.rv != l.ResourceVersion || st.renew != renew
	if st == nil || st.gone {
		st = &nodeState{}
		e.nodes[node] = st
	}
	st.rv, st.renew, st.health = l.ResourceVersion, renew, l.Annotations[AnnotationHealth]
	st.ready = l.Annotations[lbsvc.AnnotationNodeReady] == "true"
	st.macs = l.Annotations[lbsvc.AnnotationNodeMACs]
	st.link = e.parseLink(l)
	st.linkPeer = l.Annotations[AnnotationLink] != ""
	st.linkSilent = l.Annotations[AnnotationLinkSilent] == "true"
	if node != e.self {
		e.warnMixedLocked(node, st)
	}
	if !changed {
		return
	}
	st.seen = now
	st.changes++
	if node != e.self {
		return
	}
	// Our own heartbeat proves the watch delivers: everything written
	// before it has been seen too. After a gap (watch down or our renewals
	// failing) nobody can be judged on what we missed, so restart the clock.
	if period, timeout := e.memberTimingLocked(); !e.selfSeen.IsZero() && now.Sub(e.selfSeen) >= timeout-period {
		e.epoch = now
	}
	e.selfSeen = now
	if e.unfenceIfCaughtUpLocked(l.ResourceVersion) {
		e.log.Info("heartbeat renewals work again, unfencing")
	}
}

// unfenceIfCaughtUpLocked unfences this node when it is fenced, its
// renewals work again and the cache has caught up with them (its own
// heartbeat at version rv is at least the first renewal that worked), so
// Leases taken over while it was cut off are visible; in link mode it must
// also hear the link. It reports whether it unfenced. e.mu must be held.
func (e *Elector) unfenceIfCaughtUpLocked(rv string) bool {
	if !e.hb.fenced || e.hb.recoverRV == "" || !rvAtLeast(rv, e.hb.recoverRV) || (e.linkMode() && !e.o.Link.Connected()) {
		return false
	}
	e.hb.fenced, e.hb.recoverRV = false, ""
	e.metrics.fenced.Set(0)
	return true
}

// transition is one liveness change to report.
type transition struct {
	node  string
	alive bool
}

// evaluate turns heartbeat observations into liveness transitions and
// reports them: OnNodeChange for each, then OnServiceLeaseChange for every
// Lease held by a node that went stale. A peer goes stale when its
// heartbeat has not changed for HeartbeatTimeout and our own heartbeat,
// delivered by the same watch, arrived at least timeout-period after the
// peer's last change: without that proof of a live watch (for example
// while the API server is down for everyone) nobody is declared dead.
func (e *Elector) evaluate() {
	e.evalMu.Lock()
	defer e.evalMu.Unlock()
	now := e.o.Clock.Now()
	var changes []transition
	var stale []string
	e.mu.Lock()
	for node, st := range e.nodes {
		// A peer whose agent has not synced is no candidate: it would win
		// addresses and announce nothing.
		if alive := e.judgeNode(node, st, now) && st.ready; node != e.self && alive != st.alive {
			st.alive = alive
			if alive {
				st.aliveSince = now
			} else {
				st.stale, st.staleAfter = true, st.changes
				stale = append(stale, node)
			}
			changes = append(changes, transition{node, alive})
		}
		if st.gone {
			delete(e.nodes, node)
		}
	}
	// This node's liveness as a candidate: renewing, synced and seen ready
	// through the watch (aliveLocked). Reporting the last step too matters:
	// a restarted agent holding Leases is no candidate until its ready
	// heartbeat comes back, and must re-reconcile then.
	if self := e.aliveLocked(e.self); self != e.reported {
		e.reported = self
		changes = append(changes, transition{e.self, self})
	}
	e.mu.Unlock()

	for _, c := range changes {
		e.log.Info("node liveness changed", "node", c.node, "alive", c.alive)
		e.o.OnNodeChange(c.node, c.alive)
	}
	for _, node := range stale {
		objs, err := e.informer.GetIndexer().ByIndex(holderIndex, node)
		if err != nil {
			continue
		}
		for _, obj := range objs {
			if l, ok := obj.(*coordv1.Lease); ok {
				e.o.OnServiceLeaseChange(l.Namespace, l.Name)
			}
		}
	}
}

// judgeNode returns a peer's liveness at now: on the link in link mode,
// else by heartbeat freshness. e.mu must be held.
func (e *Elector) judgeNode(node string, st *nodeState, now time.Time) bool {
	if e.linkMode() {
		return e.linkJudge(node, st, now)
	}
	return e.judge(st, now)
}

// ageLocked is the vip_heartbeat_age_seconds of a node: how long its
// heartbeat has been unchanged or, in link mode, since it was last heard on
// the link (0 for this node while connected, and for a peer alive on the
// link that this node does not watch). e.mu must be held.
func (e *Elector) ageLocked(node string, st *nodeState, now time.Time) time.Duration {
	if !e.linkMode() || e.silence.all.Load() {
		return now.Sub(st.seen) // or judged by membership: the link is silent (silent.go)
	}
	if node == e.self {
		if e.o.Link.Connected() {
			return 0
		}
		return now.Sub(st.seen)
	}
	if age, ok := e.o.Link.Age(node); ok {
		return age
	}
	if e.o.Link.Alive(node) {
		return 0
	}
	return now.Sub(st.seen)
}

// judge returns a peer's liveness at now by its heartbeat's freshness. A
// peer running --liveness=link while this node runs lease renews only its
// membership (every 10s+): it is judged by that renewal's timing, not
// declared dead between two renewals (mixedTimingLocked). e.mu must be
// held.
func (e *Elector) judge(st *nodeState, now time.Time) bool {
	switch {
	case st.gone:
		return false
	case !st.alive:
		return !st.stale || st.changes > st.staleAfter
	}
	period, timeout := e.o.HeartbeatPeriod, e.o.HeartbeatTimeout
	if st.linkPeer && (!e.linkMode() || e.silence.all.Load()) {
		period, timeout = e.mixedTimingLocked() // or the link is silent for every node (silent.go)
	}
	from := later(st.seen, e.epoch)
	return now.Sub(from) < timeout || e.selfSeen.Sub(from) < timeout-period
}

// ErrMixedLiveness: agents of one cluster run different --liveness modes.
var ErrMixedLiveness = errors.New("agents run different --liveness modes: run every agent with the same one")

// mixedTimingLocked is how a lease-mode node judges a link-mode peer's
// heartbeat: by the membership renewal period and timeout link-mode nodes
// use (memberTimingLocked), counting the members this node sees. e.mu
// must be held.
func (e *Elector) mixedTimingLocked() (period, timeout time.Duration) {
	return e.scaledMemberTimingLocked(DefaultMemberPeriod, DefaultMemberTimeout)
}

// warnMixedLocked logs, once per peer and mismatch, a peer whose liveness
// mode differs from this node's. A lease-mode node then judges the
// link-mode peer by its membership renewals (judge), a link-mode node a
// lease-mode peer by its heartbeat (linkJudge): neither takes the other's
// addresses between two renewals, but a dead peer of the other mode is
// found only when its renewals stop for a whole membership timeout.
// e.mu must be held.
func (e *Elector) warnMixedLocked(node string, st *nodeState) {
	mixed := st.linkPeer != e.linkMode()
	if mixed == st.mixWarned {
		return
	}
	st.mixWarned = mixed
	if !mixed {
		e.log.Info("peer runs the same --liveness mode again", "node", node)
		return
	}
	self, peer := "lease", "link"
	if e.linkMode() {
		self, peer = "link", "lease"
	}
	e.log.Error(ErrMixedLiveness, "peer runs another liveness mode; judging it by its heartbeat Lease renewals, so its failure is found late",
		"node", node, "peerLiveness", peer, "liveness", self)
}

// selfAliveLocked reports whether this node may hold Leases: it has renewed
// its heartbeat, seen it through the informer (so the cache is current), is
// not fenced and not shutting down. e.mu must be held.
func (e *Elector) selfAliveLocked() bool {
	return e.hb.everOK && !e.selfSeen.IsZero() && !e.hb.fenced && !e.stopping
}

// Alive reports whether node's heartbeat is fresh in this observer's view.
// For this node it reports whether it may announce (see selfAliveLocked).
func (e *Elector) Alive(node string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.aliveLocked(node)
}

// aliveLocked is Alive with e.mu held.
func (e *Elector) aliveLocked(node string) bool {
	if node == e.self {
		// Ready as peers see it: this node's own heartbeat, seen through
		// the watch, must say ready too. Acting on Ready() alone, before
		// the heartbeat carrying it reached the others, let a peer that
		// still read "not ready" take a Lease this node had just acquired,
		// and both announced the address until the watches caught up.
		st := e.nodes[node]
		return e.selfAliveLocked() && e.o.Ready() && st != nil && st.ready
	}
	st := e.nodes[node]
	return st != nil && st.alive && !st.gone
}

// AliveNodes lists the nodes Alive reports true for, sorted.
func (e *Elector) AliveNodes() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for node := range e.nodes {
		if node != e.self && e.aliveLocked(node) {
			out = append(out, node)
		}
	}
	if e.aliveLocked(e.self) {
		out = append(out, e.self)
	}
	slices.Sort(out)
	return out
}

// view is a consistent snapshot of liveness for one decision.
type view struct {
	selfAlive bool // renewing its heartbeat (selfAliveLocked)
	selfReady bool // and a candidate as peers see it (aliveLocked)
	fenced    bool
	alive     []string             // alive candidates, deduplicated, sorted
	since     map[string]time.Time // alive candidate -> alive since
}

// snapshot filters candidates down to the alive ones.
func (e *Elector) snapshot(candidates []string) view {
	e.mu.Lock()
	defer e.mu.Unlock()
	// Sized for every candidate: this runs for every Service each time a
	// node's liveness changes, and growing the map was most of its cost.
	v := view{selfAlive: e.selfAliveLocked(), selfReady: e.aliveLocked(e.self), fenced: e.hb.fenced,
		alive: make([]string, 0, len(candidates)), since: make(map[string]time.Time, len(candidates))}
	for _, c := range candidates {
		if _, dup := v.since[c]; dup || !e.aliveLocked(c) {
			continue
		}
		var since time.Time
		if st := e.nodes[c]; c != e.self && st != nil {
			since = st.aliveSince
		}
		v.since[c] = since
		v.alive = append(v.alive, c)
	}
	slices.Sort(v.alive)
	return v
}

// isAlive reports whether node is an alive candidate in v.
func (v view) isAlive(node string) bool {
	_, ok := v.since[node]
	return ok
}

// later returns the later of two times.
func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// NodeWithMAC returns the node whose heartbeat lists mac among its
// interfaces' hardware addresses ("" = none).
func (e *Elector) NodeWithMAC(mac net.HardwareAddr) string {
	want := mac.String()
	e.mu.Lock()
	defer e.mu.Unlock()
	for node, st := range e.nodes {
		if st.gone || st.macs == "" {
			continue
		}
		if slices.Contains(strings.Split(st.macs, ","), want) {
			return node
		}
	}
	return ""
}
