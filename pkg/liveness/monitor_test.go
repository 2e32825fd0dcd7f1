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
	drop := c.n.cut[c.self] || c.n.cut[to] || c.n.group[c.self] != c.n.group[to]
	c.n.sent = append(c.n.sent, captured{append([]byte(nil), b...), c.self})
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
		net:  &fakeNet{by: map[netip.AddrPort]*Monitor{}, cut: map[netip.AddrPort]bool{}, group: map[netip.AddrPort]int{}},
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
		for _, m := range c.mons {
			m.tick()
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

func TestDeathReachesEveryNode(t *testing.T) {
	c := newCluster(t, 20)
	c.run(time.Second)
	c.kill("node7")
	c.run(DefaultTimeout - DefaultInterval)
	if alive, _ := c.aliveEverywhere("node7"); len(alive) != 19 {
		t.Fatalf("node7 judged dead before the timeout by some: alive for %v", alive)
	}
	c.run(2 * DefaultInterval)
	if alive, _ := c.aliveEverywhere("node7"); len(alive) != 0 {
		t.Fatalf("node7 still alive for %v one interval after the timeout", alive)
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
	c.run(DefaultTimeout + DefaultInterval)
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
