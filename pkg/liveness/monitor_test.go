package liveness

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// fakeNet delivers datagrams synchronously between monitors; a node can be
// cut off (it neither sends nor receives).
type fakeNet struct {
	mu    sync.Mutex
	by    map[netip.AddrPort]*Monitor
	cut   map[netip.AddrPort]bool
	sent  []captured
	group map[netip.AddrPort]int // split link: only the same group hears
	// oneWay drops datagrams from [0] to [1] only.
	oneWay map[[2]netip.AddrPort]bool
	// paused receivers queue what they are sent, unread.
	paused  map[netip.AddrPort]bool
	backlog map[netip.AddrPort][]captured
}

type captured struct {
	b    []byte
	from netip.AddrPort
}

type fakeConn struct {
	n    *fakeNet
	self netip.AddrPort
}

func (c fakeConn) ReadFromUDPAddrPort([]byte) (int, netip.AddrPort, error) {
	return 0, netip.AddrPort{}, net.ErrClosed
}

func (c fakeConn) WriteToUDPAddrPort(b []byte, to netip.AddrPort) (int, error) {
	c.n.mu.Lock()
	dst := c.n.by[to]
	drop := c.n.cut[c.self] || c.n.cut[to] || c.n.group[c.self] != c.n.group[to] || c.n.oneWay[[2]netip.AddrPort{c.self, to}]
	c.n.sent = append(c.n.sent, captured{append([]byte(nil), b...), c.self})
	if c.n.paused[to] && !drop {
		c.n.backlog[to] = append(c.n.backlog[to], captured{append([]byte(nil), b...), c.self})
		drop = true
	}
	c.n.mu.Unlock()
	if dst != nil && !drop {
		_ = dst.Receive(b, c.self)
	}
	return len(b), nil
}

func (c fakeConn) Close() error { return nil }

type cluster struct {
	t     *testing.T
	clk   *clocktesting.FakeClock
	net   *fakeNet
	mons  map[string]*Monitor
	addrs map[string]netip.AddrPort
	fresh map[string]bool
	mu    sync.Mutex
}

func newCluster(t *testing.T, n int) *cluster {
	c := &cluster{t: t, clk: clocktesting.NewFakeClock(time.Unix(1_800_000_000, 0)),
		net: &fakeNet{by: map[netip.AddrPort]*Monitor{}, cut: map[netip.AddrPort]bool{}, group: map[netip.AddrPort]int{},
			oneWay: map[[2]netip.AddrPort]bool{}, paused: map[netip.AddrPort]bool{}, backlog: map[netip.AddrPort][]captured{}},
		mons: map[string]*Monitor{}, addrs: map[string]netip.AddrPort{}, fresh: map[string]bool{}}
	for i := range n {
		name := fmt.Sprintf("node%d", i+1)
		c.addrs[name] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(10 + i)}), DefaultPort)
		c.fresh[name] = true
	}
	for name := range c.addrs {
		c.start(name)
	}
	c.run(3 * time.Second) // past the join grace
	return c
}

func (c *cluster) start(name string) *Monitor {
	m, err := New(Options{Self: name, Key: testKey, Conn: fakeConn{c.net, c.addrs[name]}, Clock: c.clk,
		MemberFresh: func(n string) bool { c.mu.Lock(); defer c.mu.Unlock(); return c.fresh[n] }})
	if err != nil {
		c.t.Fatal(err)
	}
	m.SetMembers(c.addrs)
	c.net.mu.Lock()
	c.net.by[c.addrs[name]] = m
	c.net.mu.Unlock()
	c.mons[name] = m
	return m
}

func (c *cluster) kill(name string) {
	c.net.mu.Lock()
	delete(c.net.by, c.addrs[name])
	c.net.mu.Unlock()
	delete(c.mons, name)
}

// run advances the clock by d in intervals, ticking every monitor.
func (c *cluster) run(d time.Duration) {
	for end := c.clk.Now().Add(d); c.clk.Now().Before(end); {
		c.clk.Step(DefaultInterval)
		for name, m := range c.mons {
			c.net.mu.Lock()
			paused := c.net.paused[c.addrs[name]]
			c.net.mu.Unlock()
			if !paused {
				m.tick()
			}
		}
	}
}

func (c *cluster) aliveEverywhere(node string) (alive, dead []string) {
	for name, m := range c.mons {
		if name == node {
			continue
		}
		if m.Alive(node) {
			alive = append(alive, name)
		} else {
			dead = append(dead, name)
		}
	}
	return
}

func TestSteadyStateCostIsConstant(t *testing.T) {
	for _, n := range []int{3, 20, 50} {
		c := newCluster(t, n)
		c.run(time.Second)
		c.net.mu.Lock()
		c.net.sent = nil
		c.net.mu.Unlock()
		c.run(time.Second)
		perNode := float64(len(c.net.sent)) / float64(n)
		// 2 neighbours each side, 20 intervals: at most 4×20 packets each.
		if perNode > 4*20 {
			t.Errorf("%d nodes: %.0f packets per node per second, want ≤ 80", n, perNode)
		}
		for name, m := range c.mons {
			if !m.Connected() {
				t.Errorf("%d nodes: %s not connected", n, name)
			}
			if _, dead := c.aliveEverywhere(name); len(dead) > 0 {
				t.Errorf("%d nodes: %s judged dead by %v at rest", n, name, dead)
			}
		}
	}
}

// TestCostReturnsAfterBroadcasts: suspicions, death notices and a
// refutation go to every member; afterwards each node talks to its
// neighbours only again (a broadcast used to leave every member and its
// sender answering each other for good).
func TestCostReturnsAfterBroadcasts(t *testing.T) {
	c := newCluster(t, 20)
	c.run(time.Second)
	c.kill("node7")
	c.run(time.Second) // suspected, declared dead: broadcasts to all
	c.start("node7")
	c.run(time.Second) // heard again: more broadcasts
	c.run(2 * DefaultTimeout)
	c.net.mu.Lock()
	c.net.sent = nil
	c.net.mu.Unlock()
	c.run(time.Second)
	c.net.mu.Lock()
	per := map[netip.AddrPort]int{}
	for _, s := range c.net.sent {
		per[s.from]++
	}
	c.net.mu.Unlock()
	for name, a := range c.addrs {
		// 2 neighbours each side, 20 intervals: at most 4×20 packets.
		if per[a] > 4*20 {
			t.Errorf("%s sent %d packets in the second after the broadcasts, want ≤ 80", name, per[a])
		}
	}
	if _, dead := c.aliveEverywhere("node7"); len(dead) != 0 {
		t.Fatalf("restarted node7 still dead for %v", dead)
	}
}

func TestDeathReachesEveryNode(t *testing.T) {
	c := newCluster(t, 20)
	c.run(time.Second)
	c.kill("node7")
	suspectFor := DefaultTimeout / 3
	c.run(DefaultTimeout + suspectFor - DefaultInterval)
	if alive, _ := c.aliveEverywhere("node7"); len(alive) != 19 {
		t.Fatalf("node7 judged dead before the timeout and suspicion by some: alive for %v", alive)
	}
	c.run(2 * DefaultInterval)
	if alive, _ := c.aliveEverywhere("node7"); len(alive) != 0 {
		t.Fatalf("node7 still alive for %v one interval after the timeout and suspicion", alive)
	}
	for name, m := range c.mons {
		if !m.Connected() {
			t.Errorf("%s lost the link", name)
		}
	}
	// Restarted: heard again, alive everywhere.
	c.start("node7")
	c.run(2 * DefaultInterval)
	if _, dead := c.aliveEverywhere("node7"); len(dead) != 0 {
		t.Fatalf("restarted node7 still dead for %v", dead)
	}
}

func TestCutOffNodeKnowsIt(t *testing.T) {
	c := newCluster(t, 5)
	c.run(time.Second)
	c.net.mu.Lock()
	c.net.cut[c.addrs["node2"]] = true
	c.net.mu.Unlock()
	c.run(DefaultTimeout + DefaultTimeout/3 + DefaultInterval)
	if c.mons["node2"].Connected() {
		t.Fatal("node2 cut off but still connected")
	}
	if alive, _ := c.aliveEverywhere("node2"); len(alive) != 0 {
		t.Fatalf("cut-off node2 alive for %v", alive)
	}
	for _, n := range []string{"node1", "node3"} {
		if !c.mons["node2"].Alive(n) {
			t.Errorf("cut-off node2 declared %s dead", n)
		}
	}
	c.net.mu.Lock()
	c.net.cut[c.addrs["node2"]] = false
	c.net.mu.Unlock()
	c.run(2 * DefaultInterval)
	if !c.mons["node2"].Connected() {
		t.Fatal("node2 back on the link but not connected")
	}
	if _, dead := c.aliveEverywhere("node2"); len(dead) != 0 {
		t.Fatalf("node2 back but dead for %v", dead)
	}
}

func TestAloneWithGoneMembersStaysConnected(t *testing.T) {
	c := newCluster(t, 3)
	c.run(time.Second)
	c.kill("node1")
	c.kill("node2")
	c.run(time.Second)
	if c.mons["node3"].Connected() {
		t.Fatal("node3 hears nobody while the API says node1, node2 exist: it must count as cut off")
	}
	c.mu.Lock()
	c.fresh["node1"], c.fresh["node2"] = false, false
	c.mu.Unlock()
	c.run(2 * DefaultInterval)
	if !c.mons["node3"].Connected() {
		t.Fatal("node3 alone with members the API says are gone: not connected")
	}
}

func TestSplitLink(t *testing.T) {
	c := newCluster(t, 6)
	c.run(time.Second)
	c.net.mu.Lock()
	for _, n := range []string{"node4", "node5", "node6"} {
		c.net.group[c.addrs[n]] = 1
	}
	c.net.mu.Unlock()
	c.run(time.Second)
	for name, m := range c.mons {
		if !m.Connected() {
			t.Errorf("%s: not connected in its half", name)
		}
		for other := range c.mons {
			same := (name < "node4") == (other < "node4")
			if other != name && same && !m.Alive(other) {
				t.Errorf("%s judges %s, in its own half, dead", name, other)
			}
		}
	}
}

func TestForgedAndReplayedPacketsIgnored(t *testing.T) {
	c := newCluster(t, 3)
	c.run(time.Second)
	m := c.mons["node1"]
	src := c.addrs["node2"]
	// A captured packet of node2's, replayed.
	c.net.mu.Lock()
	var old []byte
	for _, s := range c.net.sent {
		if s.from == src {
			old = s.b
		}
	}
	c.net.mu.Unlock()
	if err := m.Receive(old, src); !errors.Is(err, ErrRejected) {
		t.Fatalf("replay: %v", err)
	}
	forged, _ := Packet{Kind: KindNotice, From: "node2", Incarnation: 1 << 62, Seq: 1, SentUnixMilli: c.clk.Now().UnixMilli(),
		Subject: "node3", SubjectInc: 1 << 62}.Marshal([]byte("not the cluster key!"))
	if err := m.Receive(forged, src); !errors.Is(err, ErrBadMAC) {
		t.Fatalf("forged: %v", err)
	}
	spoofed, _ := Packet{Kind: KindBeat, From: "node2", Incarnation: 1 << 62, Seq: 1, SentUnixMilli: c.clk.Now().UnixMilli()}.Marshal(testKey)
	if err := m.Receive(spoofed, netip.MustParseAddrPort("10.0.0.99:7947")); !errors.Is(err, ErrRejected) {
		t.Fatalf("wrong source address: %v", err)
	}
	stale, _ := Packet{Kind: KindBeat, From: "node2", Incarnation: 1 << 62, Seq: 1, SentUnixMilli: c.clk.Now().Add(-time.Hour).UnixMilli()}.Marshal(testKey)
	if err := m.Receive(stale, src); !errors.Is(err, ErrRejected) {
		t.Fatalf("hour-old packet: %v", err)
	}
	stranger, _ := Packet{Kind: KindBeat, From: "node9", Seq: 1, SentUnixMilli: c.clk.Now().UnixMilli()}.Marshal(testKey)
	if err := m.Receive(stranger, src); !errors.Is(err, ErrRejected) {
		t.Fatalf("non-member: %v", err)
	}
	if !m.Alive("node3") || !m.Alive("node2") {
		t.Fatal("ignored packets changed liveness")
	}
}

func TestFalseDeathIsRefuted(t *testing.T) {
	c := newCluster(t, 8)
	c.run(time.Second)
	// A lagging observer's notice about node5 (authentic, from node1).
	n1 := c.mons["node1"]
	n1.broadcast(Packet{Kind: KindNotice, Subject: "node5", Alive: false, SubjectInc: n1.peers["node5"].last.inc, SubjectSeq: n1.peers["node5"].last.seq + 1000})
	c.run(2 * DefaultInterval)
	if _, dead := c.aliveEverywhere("node5"); len(dead) != 0 {
		t.Fatalf("node5 alive but still dead for %v after refuting", dead)
	}
}

// pause stops name's loop and queues what it is sent; resume delivers the
// first k queued datagrams, ticks it once (its late tick), then delivers
// the rest: a starved observer that reads part of its backlog before it
// judges.
func (c *cluster) pause(name string) {
	c.net.mu.Lock()
	c.net.paused[c.addrs[name]] = true
	c.net.mu.Unlock()
}

func (c *cluster) resume(name string, k int, from string) {
	a := c.addrs[name]
	take := func() []captured {
		c.net.mu.Lock()
		defer c.net.mu.Unlock()
		q := c.net.backlog[a]
		delete(c.net.backlog, a)
		return q
	}
	m := c.mons[name]
	var first, rest []captured
	for _, d := range take() {
		if d.from == c.addrs[from] && len(first) < k {
			first = append(first, d)
			continue
		}
		rest = append(rest, d)
	}
	for _, d := range first {
		_ = m.Receive(d.b, d.from)
	}
	m.tick() // still paused: answers to what it sends now queue behind the backlog
	c.net.mu.Lock()
	c.net.paused[a] = false
	c.net.mu.Unlock()
	for _, d := range append(rest, take()...) {
		_ = m.Receive(d.b, d.from)
	}
}

// A starved observer (its loop and its reads stopped for longer than the
// timeout) that reads one peer's queued heartbeat before its late tick
// must not judge the other, whose heartbeats are still unread, silent: it
// suspects nobody, let alone declares a death.
func TestStarvedObserverJudgesNobody(t *testing.T) {
	c := newCluster(t, 3)
	c.run(time.Second)
	n1 := c.mons["node1"]
	before := n1.Stats()
	c.pause("node1")
	c.run(2 * DefaultTimeout)
	c.resume("node1", 1, "node3")
	c.run(2 * time.Second)
	after := n1.Stats()
	if after.Stalls == before.Stalls {
		t.Error("node1's late tick was not noticed as a stall")
	}
	if after.Suspicions != before.Suspicions {
		t.Errorf("starved node1 suspected %d peers", after.Suspicions-before.Suspicions)
	}
	for _, n := range []string{"node2", "node3"} {
		if _, dead := c.aliveEverywhere(n); len(dead) != 0 {
			t.Errorf("%s judged dead by %v after node1's stall", n, dead)
		}
	}
	if !n1.Connected() {
		t.Error("starved node1 counts itself cut off")
	}
}

// A peer that only one observer stops hearing (the path between them
// fails) is suspected, vouched for by the others who still hear it, and
// never declared dead.
func TestSuspicionClearedByOthers(t *testing.T) {
	c := newCluster(t, 5)
	c.run(time.Second)
	c.net.mu.Lock()
	c.net.oneWay[[2]netip.AddrPort{c.addrs["node2"], c.addrs["node1"]}] = true
	c.net.mu.Unlock()
	c.run(3 * time.Second)
	if _, dead := c.aliveEverywhere("node2"); len(dead) != 0 {
		t.Fatalf("node2, heard by all but node1, judged dead by %v", dead)
	}
	st := c.mons["node1"].Stats()
	if st.Suspicions == 0 || st.Cleared == 0 {
		t.Fatalf("node1 should have suspected node2 and been told it lives: %+v", st)
	}
}

// A sender that pauses for less than timeout + suspicion (a hiccup) is
// suspected by its neighbours and refutes; nothing is declared dead.
func TestSenderHiccupIsNotDeath(t *testing.T) {
	c := newCluster(t, 5)
	c.run(time.Second)
	c.pause("node4")
	c.run(DefaultTimeout + DefaultInterval)
	c.resume("node4", 0, "")
	c.run(2 * time.Second)
	if _, dead := c.aliveEverywhere("node4"); len(dead) != 0 {
		t.Fatalf("node4's hiccup made it dead for %v", dead)
	}
}

// Datagrams waiting unread in a real socket at a tick (the receive
// goroutine is behind) count as a stall: nobody is suspected.
func TestUnreadBacklogIsAStall(t *testing.T) {
	c := newCluster(t, 3)
	c.run(time.Second)
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = udp.Close() }()
	n1 := c.mons["node1"]
	n1.o.Conn = udp // its reads stopped: nothing drains this socket
	if n1.backlog() {
		t.Fatal("empty socket reported as a backlog")
	}
	snd, err := net.DialUDP("udp4", nil, udp.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = snd.Close() }()
	if _, err := snd.Write([]byte("queued")); err != nil {
		t.Fatal(err)
	}
	waitBacklog := time.Now().Add(10 * time.Second)
	for !n1.backlog() {
		if time.Now().After(waitBacklog) {
			t.Fatal("a queued datagram is not reported as a backlog")
		}
		time.Sleep(time.Millisecond)
	}
	before := n1.Stats()
	c.pause("node2") // silent to node1's clock while node1's reads are behind
	c.pause("node3")
	c.run(2 * DefaultTimeout)
	n1.tick()
	after := n1.Stats()
	if after.Stalls == before.Stalls {
		t.Error("a tick with unread datagrams was not counted as a stall")
	}
	if after.Suspicions != before.Suspicions {
		t.Errorf("node1, behind on its reads, suspected %d peers", after.Suspicions-before.Suspicions)
	}
	buf := make([]byte, 64)
	if _, _, err := udp.ReadFromUDPAddrPort(buf); err != nil {
		t.Fatal(err)
	}
	if n1.backlog() {
		t.Error("drained socket still reported as a backlog")
	}
}
