package liveness

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/utils/clock"
)

// Defaults for zero Options fields.
const (
	DefaultInterval   = 50 * time.Millisecond
	DefaultTimeout    = 300 * time.Millisecond
	DefaultNeighbours = 2
	DefaultMaxSkew    = time.Minute
	DefaultPort       = 7947
)

// ErrInvalidOptions marks Options that New refuses.
var ErrInvalidOptions = errors.New("invalid liveness options")

// Conn is the UDP socket on the link (*net.UDPConn); a fake in tests.
type Conn interface {
	ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error)
	WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error)
	Close() error
}

// Options configure a Monitor.
type Options struct {
	// Self is this node's name; Key the shared HMAC key (16 bytes at least).
	Self string
	Key  []byte
	// Conn is bound to this node's address on the announcing interface.
	Conn Conn
	// Interval between heartbeats (default 50ms); Timeout of silence after
	// which a neighbour is dead (default 300ms, at least 3 intervals).
	Interval, Timeout time.Duration
	// Neighbours on each side of the ring (default 2).
	Neighbours int
	// SuspectFor is how long a neighbour silent for Timeout stays only
	// suspected before it is dead (default Timeout/3, at least 2
	// intervals): the other members are asked meanwhile whether they heard
	// it since, and one that did clears the suspicion.
	SuspectFor time.Duration
	// CutAfter is how long this node may hear none of its neighbours
	// before it counts itself cut off (default 2/3 of Timeout).
	CutAfter time.Duration
	// JoinGrace is how long a new member may stay silent before it is
	// judged (default 2s): it learns the membership from its own watch.
	JoinGrace time.Duration
	// MaxSkew bounds the difference between a sender's wall clock and ours
	// (default 1m): an older packet is a replay.
	MaxSkew time.Duration
	// MemberFresh reports whether the API still says node exists and is
	// running (its membership was renewed lately). A node that hears none
	// of its neighbours while one of them is fresh is cut off the link.
	// Default: always fresh.
	MemberFresh func(node string) bool
	// OnChange is called, without blocking, after any change of Alive or
	// Connected.
	OnChange func()
	Clock    clock.WithTicker
	Logger   logr.Logger
}

func (o Options) withDefaults() (Options, error) {
	if o.Self == "" || len(o.Self) > maxName {
		return o, fmt.Errorf("%w: node name %q", ErrInvalidOptions, o.Self)
	}
	if len(o.Key) < minKeySize {
		return o, fmt.Errorf("%w: %w", ErrInvalidOptions, ErrShortKey)
	}
	if o.Conn == nil {
		return o, fmt.Errorf("%w: no socket", ErrInvalidOptions)
	}
	if o.Interval == 0 {
		o.Interval = DefaultInterval
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Neighbours == 0 {
		o.Neighbours = DefaultNeighbours
	}
	if o.SuspectFor == 0 {
		o.SuspectFor = max(o.Timeout/3, 2*o.Interval)
	}
	if o.CutAfter == 0 {
		o.CutAfter = o.Timeout * 2 / 3
	}
	if o.JoinGrace == 0 {
		o.JoinGrace = 2 * time.Second
	}
	if o.MaxSkew == 0 {
		o.MaxSkew = DefaultMaxSkew
	}
	if o.Interval < 0 || o.Neighbours < 0 || o.MaxSkew < 0 || o.SuspectFor < 0 || o.Timeout < 3*o.Interval {
		return o, fmt.Errorf("%w: timeout %v must be at least 3 intervals (%v), all positive", ErrInvalidOptions, o.Timeout, o.Interval)
	}
	if o.MemberFresh == nil {
		o.MemberFresh = func(string) bool { return true }
	}
	if o.OnChange == nil {
		o.OnChange = func() {}
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	return o, nil
}

// belief is what this node believes about a peer, as of the peer's packet
// at (dead beats alive at the same stamp).
type belief struct {
	alive bool
	at    stamp
}

// newer reports whether b should replace o.
func (b belief) newer(o belief) bool {
	return b.at.after(o.at) || (b.at == o.at && o.alive && !b.alive)
}

// peer is one member as this node sees it. Times are on our clock.
type peer struct {
	addr      netip.AddrPort
	ring      uint64    // position on the ring
	last      stamp     // newest packet accepted from it (replay guard)
	heard     time.Time // when we last accepted a packet from it
	asked     time.Time // when it last sent us a KindBeat (it watches us and waits for our answer)
	watching  bool      // it is our ring neighbour
	watchFrom time.Time // when it became our neighbour
	belief    belief    // alive unless told or seen otherwise
	fresh     bool      // just added: not watched yet
	suspectAt time.Time // when we asked the others about it (zero: not suspected)
	vouched   time.Time // when another member last told us it heard it since
}

// Stats counts packets, for metrics and benchmarks.
type Stats struct {
	Sent, Received, Rejected, Notices uint64
	// Suspicions counts neighbours this node suspected (silent for the
	// timeout), Cleared those another member or the neighbour itself
	// cleared, Stalls the times this node's own loop ran late and its
	// judgements were put off.
	Suspicions, Cleared, Stalls uint64
	// BadKey counts datagrams failing authentication that came from a
	// member's link address: most likely that member holds another key.
	// They are ignored like any other forgery.
	BadKey uint64
}

// Monitor runs this node's heartbeats and judges its peers'.
type Monitor struct {
	o    Options
	log  logr.Logger
	self stamp // our incarnation; seq grows per packet
	ring uint64

	mu        sync.Mutex
	peers     map[string]*peer
	heardAny  time.Time // last packet accepted from anyone (or start)
	connected bool
	refuted   time.Time
	lastTick  time.Time // when our loop last ran
	stats     Stats
}

// New validates o and builds a Monitor; Run starts it.
func New(o Options) (*Monitor, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	now := o.Clock.Now()
	return &Monitor{
		o: o, log: o.Logger.WithName("liveness"),
		self:     stamp{inc: uint64(now.UnixNano())},
		ring:     ringPos(o.Self),
		peers:    map[string]*peer{},
		heardAny: now, connected: true,
	}, nil
}

// ringPos places a node on the ring.
func ringPos(node string) uint64 {
	h := sha256.Sum256([]byte(node))
	return binary.BigEndian.Uint64(h[:8])
}

// SetMembers replaces the membership: every node that exists, with its
// address on the link. This node may be among them (ignored).
func (m *Monitor) SetMembers(members map[string]netip.AddrPort) {
	m.mu.Lock()
	for node := range m.peers {
		if _, ok := members[node]; !ok {
			delete(m.peers, node)
		}
	}
	for node, addr := range members {
		if node == m.o.Self {
			continue
		}
		if p := m.peers[node]; p != nil {
			p.addr = addr
			continue
		}
		// A new member may not know us yet: give it time to start sending.
		m.peers[node] = &peer{addr: addr, ring: ringPos(node), belief: belief{alive: true}, fresh: true}
	}
	m.rewatchLocked(m.o.Clock.Now())
	m.mu.Unlock()
	m.o.OnChange()
}

// rewatchLocked recomputes our ring neighbours among the peers believed
// alive: Neighbours on each side.
func (m *Monitor) rewatchLocked(now time.Time) {
	type pos struct {
		node string
		at   uint64
	}
	var alive []pos
	for node, p := range m.peers {
		if p.belief.alive {
			alive = append(alive, pos{node, p.ring - m.ring}) // distance clockwise from us
		}
	}
	slices.SortFunc(alive, func(a, b pos) int {
		if a.at != b.at {
			if a.at < b.at {
				return -1
			}
			return 1
		}
		if a.node < b.node {
			return -1
		}
		return 1
	})
	want := map[string]bool{}
	k := m.o.Neighbours
	for i := 0; i < len(alive) && i < k; i++ {
		want[alive[i].node] = true
		want[alive[len(alive)-1-i].node] = true
	}
	for node, p := range m.peers {
		w := want[node]
		if w && !p.watching {
			// It may learn only now that it is our neighbour (the same
			// death notice): judge it after a grace.
			p.watchFrom = now.Add(m.o.Timeout)
			if p.fresh {
				p.watchFrom = now.Add(m.o.JoinGrace)
			}
		}
		p.watching, p.fresh = w, false
	}
}

// Run sends heartbeats and judges peers until ctx is done; it closes Conn.
func (m *Monitor) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { m.readLoop() })
	t := m.o.Clock.NewTicker(m.o.Interval)
	defer func() {
		t.Stop()
		_ = m.o.Conn.Close()
		wg.Wait()
	}()
	again, retries := m.tick(), 0
	for {
		// A tick that found datagrams unread judges again shortly, once
		// they are read, instead of a whole interval later (rejudge).
		var retry <-chan time.Time
		if again && retries < maxRejudges {
			retry = m.o.Clock.After(m.o.Interval / rejudgeDivisor)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
			again, retries = m.tick(), 0
		case <-retry:
			again, retries = m.rejudge(), retries+1
		}
	}
}

// tick sends this interval's heartbeats and judges the neighbours. It
// reports whether the judgements were put off only because datagrams
// waited unread (the caller may rejudge once they are read).
func (m *Monitor) tick() bool {
	now := m.o.Clock.Now()
	backlog := m.backlog()
	m.mu.Lock()
	behind, late := m.checkStallLocked(now, backlog)
	var watched, asking []netip.AddrPort
	for _, p := range m.peers {
		// Our neighbours, and whoever watches us (it counts on our
		// answer). Only a KindBeat asks: a reply, suspect or notice does
		// not, or any broadcast would leave every member and its sender
		// answering each other for good.
		switch {
		case p.watching:
			watched = append(watched, p.addr)
		case !p.asked.IsZero() && now.Sub(p.asked) < 2*m.o.Timeout:
			asking = append(asking, p.addr)
		}
	}
	m.mu.Unlock()
	m.send(Packet{Kind: KindBeat}, watched)
	m.send(Packet{Kind: KindReply}, asking)
	m.judge(now, behind, backlog)
	return backlog && !late
}

// judge declares silent neighbours dead, or this node cut off.
// MemberFresh is asked without our lock held (it takes the caller's).
// Live neighbours are heard every interval: a silent one is dead only while
// others were heard well after it fell silent. When everybody fell silent
// at once for CutAfter (less than Timeout, so a cut-off node stops before
// its peers take over), this node is the one cut off, unless the API says
// the silent ones are gone.
//
// behind: this node's loop ran late or its receive goroutine is behind
// (backlog: datagrams wait unread), so nobody is suspected or declared dead
// at this tick; a backlog also means this node hears the link.
func (m *Monitor) judge(now time.Time, behind, backlog bool) {
	m.mu.Lock()
	var silent, watched []string
	var suspects []Packet
	for node, p := range m.peers {
		if !p.watching || !p.belief.alive {
			continue
		}
		if now.Sub(later(p.heard, p.watchFrom)) >= 0 {
			watched = append(watched, node)
		}
		if sp, ok := m.suspectLocked(node, p, now, behind); ok {
			suspects = append(suspects, sp)
		} else if !behind && !p.suspectAt.IsZero() && now.Sub(p.suspectAt) >= m.o.SuspectFor-m.o.Interval/tickSlackDivisor {
			silent = append(silent, node)
		}
	}
	heardFor := now.Sub(m.heardAny)
	if backlog {
		heardFor = 0 // datagrams arrived: this node is on the link
	}
	m.mu.Unlock()
	for _, sp := range suspects {
		m.broadcast(sp)
	}
	fresh := false
	if heardFor >= m.o.CutAfter {
		for _, node := range watched {
			if m.o.MemberFresh(node) {
				fresh = true
				break
			}
		}
	}
	m.mu.Lock()
	wasConnected := m.connected
	var dead []string
	switch {
	case heardFor >= m.o.CutAfter && fresh:
		m.connected = false
	case heardFor >= m.o.CutAfter, heardFor < m.o.Timeout/2:
		m.connected, dead = true, silent
	}
	var notices []Packet
	for _, node := range dead {
		p := m.peers[node]
		if p == nil || !p.belief.alive {
			continue
		}
		at := p.last
		if p.belief.at.after(at) {
			at = p.belief.at // vouched for with a newer stamp than we heard
		}
		p.belief, p.suspectAt = belief{alive: false, at: at}, time.Time{}
		notices = append(notices, Packet{Kind: KindNotice, Subject: node, Alive: false, SubjectInc: at.inc, SubjectSeq: at.seq})
		m.log.Info("peer silent on the link and nobody heard it since: dead", "node", node, "timeout", m.o.Timeout, "suspectedFor", m.o.SuspectFor)
	}
	if len(notices) > 0 {
		m.rewatchLocked(now)
	}
	changed := wasConnected != m.connected || len(notices) > 0
	if wasConnected != m.connected {
		m.log.Info("link connectivity changed", "connected", m.connected, "silentNeighbours", silent)
	}
	m.mu.Unlock()
	for _, n := range notices {
		m.broadcast(n)
	}
	if changed {
		m.o.OnChange()
	}
}

// broadcast sends a notice to every member, its subject included (told it
// is dead while alive, it refutes).
func (m *Monitor) broadcast(n Packet) {
	m.mu.Lock()
	var to []netip.AddrPort
	for _, p := range m.peers {
		to = append(to, p.addr)
	}
	m.stats.Notices++
	m.mu.Unlock()
	m.send(n, to)
}

// send stamps, signs and sends p to each address.
func (m *Monitor) send(p Packet, to []netip.AddrPort) {
	if len(to) == 0 {
		return
	}
	m.mu.Lock()
	m.self.seq++
	p.From, p.Incarnation, p.Seq = m.o.Self, m.self.inc, m.self.seq
	m.mu.Unlock()
	p.SentUnixMilli = m.o.Clock.Now().UnixMilli()
	b, err := p.Marshal(m.o.Key)
	if err != nil {
		m.log.Error(err, "encoding a liveness packet")
		return
	}
	sent := 0
	for _, a := range to {
		if _, err := m.o.Conn.WriteToUDPAddrPort(b, a); err != nil {
			m.log.V(2).Info("sending a liveness packet failed", "to", a, "err", err)
			continue
		}
		sent++
	}
	m.mu.Lock()
	m.stats.Sent += uint64(sent)
	m.mu.Unlock()
}

// Alive reports whether node is a member this node believes alive on the
// link (a member nobody reported is alive). This node is alive while
// Connected.
func (m *Monitor) Alive(node string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if node == m.o.Self {
		return m.connected
	}
	p := m.peers[node]
	return p != nil && p.belief.alive
}

// Connected reports whether this node is on the link: it hears one of its
// neighbours, or none of the silent ones still exists for the API.
func (m *Monitor) Connected() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.connected
}

// Age is how long ago node was last heard on the link, when this node
// watches it (its neighbour) or heard it lately; ok is false otherwise.
func (m *Monitor) Age(node string) (time.Duration, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.peers[node]
	if p == nil || p.heard.IsZero() {
		return 0, false
	}
	return m.o.Clock.Since(p.heard), true
}

// Stats returns the packet counters.
func (m *Monitor) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stats
}

// Neighbours lists the nodes this node watches, sorted.
func (m *Monitor) Neighbours() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for node, p := range m.peers {
		if p.watching {
			out = append(out, node)
		}
	}
	slices.Sort(out)
	return out
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func absDuration(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}
