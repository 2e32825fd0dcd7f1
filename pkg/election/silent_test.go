package election

import (
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	coordv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"

	"github.com/vip-lb/vip/pkg/liveness"
)

// quietLink is a link whose answers the test sets: whether this node is
// connected, who is alive, who was heard how long ago, and how many
// datagrams failed authentication.
type quietLink struct {
	mu        sync.Mutex
	connected bool
	dead      map[string]bool
	heard     map[string]time.Duration
	badKey    uint64
}

func newQuietLink() *quietLink {
	return &quietLink{dead: map[string]bool{}, heard: map[string]time.Duration{}}
}

func (l *quietLink) Alive(node string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.dead[node]
}

func (l *quietLink) Connected() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.connected
}

func (l *quietLink) SetMembers(map[string]netip.AddrPort) {}

func (l *quietLink) Age(node string) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	a, ok := l.heard[node]
	return a, ok
}

func (l *quietLink) Stats() liveness.Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return liveness.Stats{BadKey: l.badKey}
}

// set changes the link under its lock.
func (l *quietLink) set(f func(l *quietLink)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f(l)
}

// silentUnit is a link-mode unit "a" on a quietLink, with a fake Event
// recorder.
type silentUnit struct {
	*unit
	link   *quietLink
	events *record.FakeRecorder
	t      *testing.T
}

func newSilentUnit(t *testing.T) *silentUnit {
	t.Helper()
	ql := newQuietLink()
	fr := record.NewFakeRecorder(100)
	u := newUnit(t, newFakeClient(), "a", func(o *Options) {
		o.Link, o.LinkAddress, o.LinkInterface, o.Recorder = ql, "10.0.0.1:7947", "eth1", fr
	})
	su := &silentUnit{unit: u, link: ql, events: fr, t: t}
	su.ready()
	u.mu.Lock()
	u.hb.lease = &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{
		AnnotationLink: "10.0.0.1:7947", AnnotationHealth: "", "vip.io/ready": "true"}}}
	u.mu.Unlock()
	return su
}

// member makes a observe a link-mode heartbeat of node (a new version),
// reporting silent or not.
func (u *silentUnit) member(node string, silent bool) {
	u.mu.Lock()
	rv := "1"
	if st := u.nodes[node]; st != nil {
		n, _ := strconv.Atoi(st.rv)
		rv = strconv.Itoa(n + 1)
	}
	u.mu.Unlock()
	l := hbLease(node, rv, "http://"+node+"/health")
	l.Annotations[AnnotationLink] = "10.0.0." + strconv.Itoa(int(node[0])-'a'+1) + ":7947"
	if silent {
		l.Annotations[AnnotationLinkSilent] = "true"
	}
	u.onUpsert(nil, l)
}

// step advances the clock by d in steps of 100 ms, checking silence and
// evaluating at each; every period this node and the renewing peers renew
// (with their silence reports).
func (u *silentUnit) step(d time.Duration, renewing map[string]bool) {
	var since time.Duration
	for done := time.Duration(0); done < d; done += silentCheck {
		u.clk.Step(silentCheck)
		since += silentCheck
		if since >= u.o.HeartbeatPeriod {
			since = 0
			u.beat(u.self)
			for n, silent := range renewing {
				u.member(n, silent)
			}
		}
		u.checkSilence()
		u.evaluate()
	}
}

// published is this node's silence report as it would be written.
func (u *silentUnit) published() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.Elector.published[AnnotationLinkSilent]
}

// drain returns the Events recorded so far.
func (u *silentUnit) drain() []string {
	var out []string
	for {
		select {
		case ev := <-u.events.Events:
			out = append(out, ev)
		default:
			return out
		}
	}
}

func hasEvent(evs []string, prefix string) bool {
	for _, ev := range evs {
		if strings.HasPrefix(ev, prefix) {
			return true
		}
	}
	return false
}

// Every member hears nobody (a firewall dropping the port): nobody fences
// for it, peers are judged by their membership renewals (a peer whose
// renewals stop goes dead after the membership timeout although the link
// never said so; one renewing stays alive although the link says it is
// dead), and the node says so once: Warning Event, metric, published
// report. When a peer hears again, the link's rules resume.
func TestLinkSilentEverywhere(t *testing.T) {
	u := newSilentUnit(t)
	u.member("b", true)
	u.member("c", true)
	u.evaluate()
	if !u.Alive("b") || !u.Alive("c") {
		t.Fatalf("peers not alive at start: %v", u.AliveNodes())
	}
	u.step(silentAfter, nil) // the first check starts the clock of silence
	if u.published() == "true" {
		t.Fatal("silence reported before silentAfter")
	}
	u.step(silentCheck, nil)
	if got := u.published(); got != "true" {
		t.Fatalf("this node hears nobody for %v: report %q, want true", silentAfter, got)
	}
	if !u.silence.all.Load() || !u.o.Link.Connected() {
		t.Fatal("every member silent: the link is not silent for the cluster, or this node would fence")
	}
	if v := testutil.ToFloat64(u.metrics.linkSilent); v != 1 {
		t.Errorf("vip_agent_link_silent = %v, want 1", v)
	}
	evs := u.drain()
	if !hasEvent(evs, "Warning LinkSilent") || len(evs) != 1 {
		t.Fatalf("events %q, want one LinkSilent Warning", evs)
	}
	for _, want := range []string{"UDP 7947", "eth1", "10.0.0.1:7947", "firewall", "different keys"} {
		if !strings.Contains(evs[0], want) {
			t.Errorf("Warning %q does not name %q", evs[0], want)
		}
	}

	// A fenced node unfences: its next renewal is due and will recover.
	u.mu.Lock()
	u.hb.fenced, u.hb.recoverRV = true, ""
	u.mu.Unlock()
	if !u.heartbeatDue(u.clk.Now()) {
		t.Error("fenced while the link is silent for everyone: no renewal due to unfence")
	}
	// Its recovery renewal came through the watch before renew recorded
	// its version: unfenced at the next check all the same.
	u.beat(u.self)
	u.mu.Lock()
	u.hb.recoverRV = u.nodes[u.self].rv
	u.mu.Unlock()
	u.step(silentCheck, nil)
	if u.Fenced() {
		t.Error("recovery renewal already seen through the watch: still fenced")
	}

	// The link says b and c are dead: it is silent, nobody listens to it.
	u.link.set(func(l *quietLink) { l.dead["b"], l.dead["c"] = true, true })
	u.step(DefaultMemberPeriod, map[string]bool{"b": true, "c": true})
	if !u.Alive("b") || !u.Alive("c") {
		t.Fatalf("peers renewing their membership judged dead by a silent link: alive %v", u.AliveNodes())
	}
	// c's renewals stop: dead after the membership timeout, not before.
	u.rec.reset()
	u.step(DefaultMemberTimeout-2*DefaultMemberPeriod, map[string]bool{"b": true})
	if !u.Alive("c") {
		t.Fatal("c dead before its membership timeout")
	}
	u.step(2*DefaultMemberPeriod, map[string]bool{"b": true})
	if u.Alive("c") || !u.Alive("b") {
		t.Fatalf("after c's membership timeout: alive %v, want b only", u.AliveNodes())
	}
	if len(u.drain()) != 0 {
		t.Error("Events repeated while nothing changed")
	}

	// b and c (back) hear again (their reports are cleared): the link's
	// rules resume, and the link says b is dead. One node hearing again
	// is not enough (TestLinkSilentOneHearing).
	u.member("b", false)
	u.step(silentCheck, nil)
	if !u.silence.all.Load() {
		t.Fatal("one node hearing again ended the silence")
	}
	u.member("c", false)
	u.step(silentCheck, nil)
	if u.silence.all.Load() {
		t.Fatal("b hears again, the link is still silent for the cluster")
	}
	if v := testutil.ToFloat64(u.metrics.linkSilent); v != 0 {
		t.Errorf("vip_agent_link_silent = %v after the link resumed", v)
	}
	if evs := u.drain(); !hasEvent(evs, "Normal LinkHeard") {
		t.Errorf("events %q, want LinkHeard", evs)
	}
	if u.Alive("b") {
		t.Error("the link's rules resumed but b, dead on the link, is alive")
	}
	if u.o.Link.Connected() {
		t.Error("this node hears nobody while others hear: it must count itself cut off")
	}
}

// One member hears nobody while the others hear each other: that one is
// cut off. It fences (Connected is false, as before), and a node that
// hears the cut one judges it dead from its report once the grace after
// start has passed, even while the link still hears it (its receive path
// alone is cut), so its addresses move instead of going dark.
func TestLinkSilentOneCut(t *testing.T) {
	t.Run("this node cut", func(t *testing.T) {
		u := newSilentUnit(t)
		u.member("b", false)
		u.member("c", false)
		u.step(2*silentAfter, nil)
		if u.published() != "true" {
			t.Fatal("cut node does not report its silence")
		}
		if u.silence.all.Load() || u.o.Link.Connected() {
			t.Fatal("one node hears nobody, the others hear: it must count itself cut off (fence)")
		}
		if evs := u.drain(); len(evs) != 0 {
			t.Errorf("events %q for one node cut off", evs)
		}
	})
	t.Run("a peer cut", func(t *testing.T) {
		u := newSilentUnit(t)
		u.link.set(func(l *quietLink) { l.connected, l.heard["b"], l.heard["c"] = true, 0, 0 })
		u.member("b", false)
		u.member("c", false)
		u.step(silentGrace, nil)
		if !u.Alive("c") {
			t.Fatal("c not alive")
		}
		u.member("c", true) // c reports it hears nobody; we still hear it
		u.step(silentHold, nil)
		if !u.Alive("c") {
			t.Fatalf("c dead before its report was seen for %v", silentHold)
		}
		u.step(silentCheck, nil)
		if u.Alive("c") || !u.Alive("b") || u.silence.all.Load() {
			t.Fatalf("c reports silence while a and b hear: alive %v, want b only", u.AliveNodes())
		}
		u.member("c", false)
		u.step(silentCheck, nil)
		if !u.Alive("c") {
			t.Fatal("c hears again: still dead")
		}
	})
	t.Run("a peer's report right after start", func(t *testing.T) {
		u := newSilentUnit(t)
		u.link.set(func(l *quietLink) { l.connected, l.heard["b"], l.heard["c"] = true, 0, 0 })
		u.member("b", false)
		u.member("c", true) // written before it heard us: being cleared
		u.step(silentCheck, nil)
		if !u.Alive("c") {
			t.Fatal("a report older than the grace after start made c dead")
		}
	})
}

// The first node a firewall lets hear the others (outgoing traffic
// allowed, incoming opened one node at a time) while nobody hears it:
// still no working link, nobody fences.
func TestLinkSilentOneHearing(t *testing.T) {
	u := newSilentUnit(t)
	u.link.set(func(l *quietLink) { l.connected, l.heard["b"], l.heard["c"] = true, 0, 0 })
	u.member("b", true)
	u.member("c", true)
	u.step(2*silentAfter, nil)
	if u.published() == "true" {
		t.Fatal("a node that hears its peers reports silence")
	}
	if !u.silence.all.Load() {
		t.Fatal("only one member hears anyone: the link must count as silent for the cluster")
	}
	if !u.Alive("b") || !u.Alive("c") {
		t.Fatalf("silent peers judged dead while the link is silent for the cluster: %v", u.AliveNodes())
	}
}

// Two members, both silent: the link is silent for the cluster and
// neither fences (with two nodes a cut and a firewall look the same).
// One member alone hears nobody and reports nothing.
func TestLinkSilentMemberCounts(t *testing.T) {
	u := newSilentUnit(t)
	u.member("b", true)
	u.step(2*silentAfter, nil)
	if !u.silence.all.Load() || !u.o.Link.Connected() {
		t.Fatal("two members, both silent: not silent for the cluster")
	}

	u = newSilentUnit(t)
	u.step(2*silentAfter, nil)
	if u.published() != "" || u.silence.all.Load() {
		t.Fatal("a single member reports silence")
	}
	if evs := u.drain(); len(evs) != 0 {
		t.Errorf("events %q for a single member", evs)
	}

	// A peer gone for the API (its renewals stopped for the membership
	// timeout) does not count: its old report says nothing.
	u = newSilentUnit(t)
	u.member("b", true)
	u.member("c", false)
	u.member("d", false)
	u.step(2*silentAfter, nil)
	if u.silence.all.Load() {
		t.Fatal("c and d report they hear: not silent for the cluster")
	}
	u.step(DefaultMemberTimeout+DefaultMemberPeriod, map[string]bool{"b": true})
	if !u.silence.all.Load() {
		t.Fatal("c and d gone for the API, a and b silent: the link must count as silent")
	}
}

// A receiver that is behind (the link says connected while nobody was
// heard lately: datagrams wait unread) does not report silence.
func TestLinkSilentNotWhileConnected(t *testing.T) {
	u := newSilentUnit(t)
	u.link.set(func(l *quietLink) { l.connected = true })
	u.member("b", false)
	u.member("c", false)
	u.step(2*silentAfter, nil)
	if u.published() != "" {
		t.Fatal("silence reported while the link says this node is connected")
	}
}

// Datagrams from members' addresses that fail authentication are counted
// and warned about at most every authWarnEvery.
func TestLinkAuthFailuresWarned(t *testing.T) {
	u := newSilentUnit(t)
	u.member("b", false)
	u.link.set(func(l *quietLink) { l.connected, l.heard["b"], l.badKey = true, 0, 3 })
	u.step(silentCheck, nil)
	if v := testutil.ToFloat64(u.metrics.linkBadKey); v != 3 {
		t.Errorf("vip_agent_link_auth_failures_total = %v, want 3", v)
	}
	evs := u.drain()
	if !hasEvent(evs, "Warning LinkAuthFailed") || !strings.Contains(evs[0], "different keys") {
		t.Fatalf("events %q, want a LinkAuthFailed Warning naming different keys", evs)
	}
	u.link.set(func(l *quietLink) { l.badKey = 5 })
	u.step(time.Minute, nil)
	if v := testutil.ToFloat64(u.metrics.linkBadKey); v != 5 {
		t.Errorf("vip_agent_link_auth_failures_total = %v, want 5", v)
	}
	if evs := u.drain(); len(evs) != 0 {
		t.Errorf("warned again within %v: %q", authWarnEvery, evs)
	}
	u.link.set(func(l *quietLink) { l.badKey = 6 })
	u.step(authWarnEvery, nil)
	if evs := u.drain(); len(evs) != 1 {
		t.Errorf("events %q, want one Warning after %v", evs, authWarnEvery)
	}
}

// BenchmarkCheckSilenceAtRest: one silence check with 100 members, all
// heard (it runs every 100 ms on every node).
func BenchmarkCheckSilenceAtRest(b *testing.B) {
	t := &testing.T{}
	u := newSilentUnit(t)
	u.link.set(func(l *quietLink) { l.connected = true })
	for i := range 99 {
		u.member("p"+strconv.Itoa(i), false)
	}
	u.checkSilence()
	b.ReportAllocs()
	for b.Loop() {
		u.checkSilence()
	}
}
