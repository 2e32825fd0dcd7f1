package liveness

import (
	"net"
	"syscall"
	"testing"
	"time"
)

// backlogConn is a fakeConn whose unread-datagram check (SIOCINQ) reads a
// real loopback socket the test fills and drains: the monitor still sends
// only on the fake network.
type backlogConn struct {
	fakeConn
	udp *net.UDPConn
}

func (c backlogConn) SyscallConn() (syscall.RawConn, error) { return c.udp.SyscallConn() }

// queueBacklog gives m a socket with one datagram unread and returns a
// function that drains it.
func queueBacklog(t *testing.T, m *Monitor) (drain func()) {
	t.Helper()
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = udp.Close() })
	m.o.Conn = backlogConn{m.o.Conn.(fakeConn), udp}
	snd, err := net.DialUDP("udp4", nil, udp.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = snd.Close() }()
	if _, err := snd.Write([]byte("queued")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !m.backlog() {
		if time.Now().After(deadline) {
			t.Fatal("a queued datagram is not reported as a backlog")
		}
		time.Sleep(time.Millisecond)
	}
	return func() {
		buf := make([]byte, 64)
		if _, _, err := udp.ReadFromUDPAddrPort(buf); err != nil {
			t.Fatal(err)
		}
		if m.backlog() {
			t.Fatal("drained socket still reported as a backlog")
		}
	}
}

// byHand stops ticking name with the others (the test ticks it); it still
// sends and receives.
func (c *cluster) byHand(name string) { delete(c.mons, name) }

// A tick that finds datagrams unread judges nobody and asks to judge
// again; judging again while they are still unread suspects nobody either,
// and once they are read the silent neighbour is suspected at once, not a
// whole interval later.
func TestRejudgeOnceBacklogIsRead(t *testing.T) {
	c := newCluster(t, 3)
	c.run(time.Second)
	n1 := c.mons["node1"]
	c.pause("node2") // silent for node1 from now on
	c.byHand("node1")
	drain := queueBacklog(t, n1)
	for range int(DefaultTimeout/DefaultInterval) + 1 {
		c.run(DefaultInterval)
		n1.tick()
	}
	before := n1.Stats()
	if before.Suspicions != 0 {
		t.Fatalf("node1 suspected %d peers with datagrams unread", before.Suspicions)
	}
	if !n1.tick() {
		t.Fatal("a tick on time with datagrams unread did not ask to judge again")
	}
	c.clk.Step(DefaultInterval / rejudgeDivisor)
	if !n1.rejudge() {
		t.Fatal("judging again with datagrams still unread did not ask to judge again")
	}
	if s := n1.Stats(); s.Suspicions != before.Suspicions {
		t.Fatalf("node1 suspected %d peers with datagrams still unread", s.Suspicions-before.Suspicions)
	}
	drain()
	c.clk.Step(DefaultInterval / rejudgeDivisor)
	if n1.rejudge() {
		t.Fatal("judging again with the socket drained asked to judge again")
	}
	if s := n1.Stats(); s.Suspicions != before.Suspicions+1 {
		t.Fatalf("node1 suspected %d peers once its backlog was read, want node2 only", s.Suspicions-before.Suspicions)
	}
	if s := n1.Stats(); s.Stalls != before.Stalls+1 {
		t.Errorf("stalls went from %d to %d: only the tick counts, not the judgements after it", before.Stalls, s.Stalls)
	}
}

// A tick that ran late (the loop itself was starved) judges nobody and
// does not judge again before the next tick, even with datagrams unread.
func TestLateTickIsNotJudgedAgain(t *testing.T) {
	c := newCluster(t, 3)
	c.run(time.Second)
	n1 := c.mons["node1"]
	c.byHand("node1")
	queueBacklog(t, n1)
	c.run(3 * DefaultInterval)
	if n1.tick() {
		t.Fatal("a late tick asked to judge again before the next tick")
	}
}

// A suspicion raised at a tick that ran a few ms late is judged at the
// tick SuspectFor after it on the ticker's schedule: the tick's own delay
// does not postpone the death by a whole interval. One judged earlier is
// not a death yet.
func TestSuspicionJudgedOnTheTickSchedule(t *testing.T) {
	c := newCluster(t, 5)
	c.run(time.Second)
	c.kill("node3")
	var observer *Monitor
	for _, m := range c.mons {
		if m.peers["node3"].watching {
			observer = m
			break
		}
	}
	if observer == nil {
		t.Fatal("nobody watches node3")
	}
	// Every node's tick runs d after the previous one.
	tick := func(d time.Duration) {
		c.clk.Step(d)
		for _, m := range c.mons {
			m.tick()
		}
	}
	// Until the next tick on schedule would find node3 silent for the
	// timeout; that tick runs 8 ms late.
	for c.clk.Since(observer.peers["node3"].heard)+DefaultInterval < DefaultTimeout {
		tick(DefaultInterval)
	}
	late := DefaultInterval / 6
	tick(DefaultInterval + late)
	if s := observer.Stats(); s.Suspicions != 1 {
		t.Fatalf("observer suspected %d peers, want node3", s.Suspicions)
	}
	for range observer.o.SuspectFor/DefaultInterval - 1 {
		tick(DefaultInterval)
		if _, dead := c.aliveEverywhere("node3"); len(dead) != 0 {
			t.Fatalf("node3 dead for %v before its suspicion lasted SuspectFor on the tick schedule", dead)
		}
	}
	tick(DefaultInterval - late) // back on schedule
	if alive, _ := c.aliveEverywhere("node3"); len(alive) != 0 {
		t.Fatalf("node3 still alive for %v %v after its suspicion at a tick %v late", alive, observer.o.SuspectFor-late, late)
	}
}
