package election

import (
	"context"
	"errors"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"

	coordv1 "k8s.io/api/coordination/v1"

	"github.com/vip-lb/vip/pkg/lbsvc"
)

// Link judges liveness on the link the addresses live on (pkg/liveness).
// With Options.Link set the Elector runs in link mode: the heartbeat Lease
// is only the node's membership and facts (renewed every HeartbeatPeriod,
// 10s by default, and when its content changes), a peer is alive while the
// link says so, and this node may announce while it is connected to the
// link; failing renewals fence nothing (a node cut only from the API keeps
// serving). The address Leases stay the only arbiter of ownership.
type Link interface {
	// Alive reports whether a member is alive on the link.
	Alive(node string) bool
	// Connected reports whether this node hears the link.
	Connected() bool
	// SetMembers gives the members and their link addresses.
	SetMembers(map[string]netip.AddrPort)
	// Age is how long ago node was last heard, when known.
	Age(node string) (time.Duration, bool)
}

// AnnotationLink carries a node's link address (ip:port) on its heartbeat.
const AnnotationLink = "vip.io/link"

// Link-mode defaults: the membership renewal and how long a member whose
// renewals stopped still counts as existing. Both grow with the number of
// members (memberTimingLocked): the period is at least MemberPeriodPerNode
// per member, so the whole cluster renews at most 1/MemberPeriodPerNode
// times a second, whatever its size.
const (
	DefaultMemberPeriod  = 10 * time.Second
	DefaultMemberTimeout = 30 * time.Second
	MemberPeriodPerNode  = 1200 * time.Millisecond
	// linkRenewCheck is how often a link-mode heartbeat checks whether its
	// content changed (readiness, facts) and needs a write before its period.
	linkRenewCheck = 250 * time.Millisecond
	// linkRetry spaces the renewals of a link-mode heartbeat that fail (the
	// API server is down or cut off: nothing depends on them meanwhile).
	linkRetry = 2 * time.Second
)

// linkMode reports whether liveness comes from the link.
func (e *Elector) linkMode() bool { return e.o.Link != nil }

// LinkHooks returns the liveness monitor's MemberFresh and OnChange for an
// Elector built after the monitor (its options hold the monitor): they
// reach the Elector once el is set; until then every member counts as
// fresh and changes wait for the first evaluation.
func LinkHooks(el *atomic.Pointer[Elector]) (memberFresh func(node string) bool, onChange func()) {
	memberFresh = func(node string) bool {
		if e := el.Load(); e != nil {
			return e.MemberFresh(node)
		}
		return true
	}
	onChange = func() {
		if e := el.Load(); e != nil {
			e.Kick()
		}
	}
	return memberFresh, onChange
}

// Kick asks for a liveness evaluation soon (the link's OnChange); it never
// blocks.
func (e *Elector) Kick() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// kickLoop evaluates liveness on each Kick until ctx is done.
func (e *Elector) kickLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.kick:
			e.evaluate()
		}
	}
}

// MemberFresh reports whether the API still says node exists: its
// heartbeat Lease is present and changed within HeartbeatTimeout (on our
// clock, from when our own watch last resumed). When our own watch is not
// delivering (the API server is down or cut off), nobody can be judged
// gone: every present member counts as fresh.
func (e *Elector) MemberFresh(node string) bool {
	now := e.o.Clock.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	st := e.nodes[node]
	if st == nil || st.gone {
		return false
	}
	period, timeout := e.memberTimingLocked()
	if e.selfSeen.IsZero() || now.Sub(e.selfSeen) >= 2*period {
		return true
	}
	return now.Sub(later(st.seen, e.epoch)) < timeout
}

// memberTimingLocked is the heartbeat's renewal period and timeout. In link
// mode the heartbeat is only a membership, renewed every
// max(HeartbeatPeriod, members × MemberPeriodPerNode) and judged gone after
// the timeout scaled alike (3× by default), counting the members this node
// sees; every node sees about the same count, and one that sees fewer
// renews more often, which is safe. In lease mode: the options. e.mu must
// be held.
func (e *Elector) memberTimingLocked() (period, timeout time.Duration) {
	if !e.linkMode() {
		return e.o.HeartbeatPeriod, e.o.HeartbeatTimeout
	}
	return e.scaledMemberTimingLocked(e.o.HeartbeatPeriod, e.o.HeartbeatTimeout)
}

// scaledMemberTimingLocked is a membership renewal period of at least
// base, and at least MemberPeriodPerNode per member this node sees, with
// a timeout in baseTimeout's ratio to base. e.mu must be held.
func (e *Elector) scaledMemberTimingLocked(base, baseTimeout time.Duration) (period, timeout time.Duration) {
	n := 0
	for _, st := range e.nodes {
		if !st.gone {
			n++
		}
	}
	period = max(base, time.Duration(n)*MemberPeriodPerNode)
	ratio := float64(baseTimeout) / float64(base)
	return period, time.Duration(float64(period) * ratio)
}

// linkMembersLocked is the membership to give the link: every present
// heartbeat with a usable link address. e.mu must be held.
func (e *Elector) linkMembersLocked() map[string]netip.AddrPort {
	out := map[string]netip.AddrPort{}
	for node, st := range e.nodes {
		if !st.gone && st.link.IsValid() {
			out[node] = st.link
		}
	}
	return out
}

// syncLinkMembers hands the membership to the link when it changed.
func (e *Elector) syncLinkMembers() {
	if !e.linkMode() {
		return
	}
	e.mu.Lock()
	m := e.linkMembersLocked()
	same := len(m) == len(e.linkMembers)
	for k, v := range m {
		if same && e.linkMembers[k] != v {
			same = false
		}
	}
	if !same {
		e.linkMembers = m
	}
	e.mu.Unlock()
	if !same {
		e.o.Link.SetMembers(m)
	}
}

// parseLink reads a heartbeat's link address; one naming an address that
// is no node's is ignored (a forged heartbeat cannot steer packets).
func (e *Elector) parseLink(l *coordv1.Lease) netip.AddrPort {
	ap, err := netip.ParseAddrPort(l.Annotations[AnnotationLink])
	if err != nil || (e.o.PeerAddressAllowed != nil && !e.o.PeerAddressAllowed(ap.Addr())) {
		return netip.AddrPort{}
	}
	return ap
}

// linkJudge is a peer's liveness in link mode: present and alive on the
// link. A peer that publishes no link address (an agent still judging
// liveness by heartbeat Leases, during a rollout) is judged by its
// heartbeat's freshness as before.
func (e *Elector) linkJudge(node string, st *nodeState, now time.Time) bool {
	if !st.link.IsValid() || e.silence.all.Load() {
		return e.judge(st, now) // or the link is silent for every node (silent.go)
	}
	return !st.gone && e.o.Link.Alive(node) && !e.reportsCutLocked(node, st, now)
}

// linkFenceLoop fences this node while it is cut off the link, unless the
// API server refuses connections (it is down for everyone: nobody can take
// over, so the addresses stay). It unfences once connected again and its
// own renewal after that has come back through the watch
// (observeHeartbeat), so its cache shows any takeover made meanwhile.
func (e *Elector) linkFenceLoop(ctx context.Context) {
	t := e.o.Clock.NewTicker(linkFenceCheck)
	defer t.Stop()
	refused := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		e.mu.Lock()
		skip := e.hb.fenced || !e.hb.everOK || e.stopping
		e.mu.Unlock()
		if skip || e.o.Link.Connected() {
			refused = false
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, linkPingTimeout)
		err := e.o.PingAPI(pctx)
		cancel()
		if errors.Is(err, syscall.ECONNREFUSED) {
			if !refused {
				e.log.Info("no peer heard on the link, but the API server is down for everyone: nobody can take over, keeping the addresses")
			}
			refused = true
			continue
		}
		e.mu.Lock()
		fence := !e.hb.fenced && !e.o.Link.Connected()
		if fence {
			e.hb.fenced, e.hb.recoverRV = true, ""
		}
		e.mu.Unlock()
		if !fence {
			continue
		}
		e.metrics.fenced.Set(1)
		e.metrics.fences.Inc()
		e.log.Info("fencing: this node hears none of its peers on the link and stops announcing", "apiPing", err)
		e.evaluate()
	}
}

// linkFenceCheck is how often a link-mode node checks whether it is cut
// off: the link monitor says so after 2/3 of its timeout, and the fence
// must follow before the peers' takeovers at the full timeout.
const linkFenceCheck = 20 * time.Millisecond

// linkPingTimeout bounds the API ping of a node that hears nobody.
const linkPingTimeout = 500 * time.Millisecond

// heartbeatDue reports whether a link-mode heartbeat must be written now:
// never written, its period is over, a renewal failed, the node is fenced
// and connected again, or its content changed. e.mu must not be held.
func (e *Elector) heartbeatDue(now time.Time) bool {
	connected := e.o.Link.Connected()
	ready := e.o.Ready()
	e.mu.Lock()
	defer e.mu.Unlock()
	h := e.hb
	period, _ := e.memberTimingLocked()
	switch {
	case now.Before(e.linkRetryAt):
		return false // the last attempt failed: retry at most every linkRetry
	case h.lease == nil || !h.everOK || !h.lastAttemptOK || now.Sub(h.lastOK) >= period:
		return true
	case h.fenced && connected && h.recoverRV == "":
		return true
	}
	a := h.lease.Annotations
	if a[AnnotationHealth] != e.o.HealthAddress || a[AnnotationLink] != e.o.LinkAddress ||
		(a[lbsvc.AnnotationNodeReady] == "true") != ready {
		return true
	}
	for k, v := range e.published {
		if a[k] != v {
			return true
		}
	}
	return false
}

// linkHeartbeatLoop writes the heartbeat when heartbeatDue says so.
func (e *Elector) linkHeartbeatLoop(ctx context.Context) {
	t := e.o.Clock.NewTicker(linkRenewCheck)
	defer t.Stop()
	for {
		if e.heartbeatDue(e.o.Clock.Now()) {
			e.renew(ctx)
			e.mu.Lock()
			if !e.hb.lastAttemptOK {
				e.linkRetryAt = e.o.Clock.Now().Add(linkRetry)
			}
			e.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
	}
}
