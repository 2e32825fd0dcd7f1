package memberlistcmp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/vip-lb/vip/pkg/liveness"
)

var linkKey = []byte("vip-liveness-comparison-key-32by")

// countingUDP counts the datagrams a monitor sends; the embedded
// *net.UDPConn keeps SyscallConn, so the monitor still sees its backlog.
type countingUDP struct {
	*net.UDPConn
	n *counters
}

func (c countingUDP) WriteToUDPAddrPort(b []byte, to netip.AddrPort) (int, error) {
	k, err := c.UDPConn.WriteToUDPAddrPort(b, to)
	if err == nil {
		c.n.udpPackets.Add(1)
		c.n.udpBytes.Add(uint64(k))
	}
	return k, err
}

type lvMember struct {
	name string
	addr netip.AddrPort
	mon  *liveness.Monitor // nil: stopped
	stop context.CancelFunc
	done chan struct{}
	// started is when the current monitor started.
	started time.Time

	mu   sync.Mutex
	dead map[string]bool // peers this member believes dead
}

type livenessCluster struct {
	names   []string
	rec     *recorder
	n       counters
	members []*lvMember
	all     map[string]netip.AddrPort
	gone    atomic.Uint64 // suspicions of stopped monitors
}

func newLivenessCluster(t *testing.T, names []string, rec *recorder) *livenessCluster {
	c := &livenessCluster{names: names, rec: rec, all: map[string]netip.AddrPort{}}
	var conns []*net.UDPConn
	for _, name := range names {
		udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, udp)
		m := &lvMember{name: name, addr: udp.LocalAddr().(*net.UDPAddr).AddrPort()}
		c.members = append(c.members, m)
		c.all[name] = m.addr
	}
	for i, m := range c.members {
		c.run(t, m, conns[i])
	}
	return c
}

// run starts m's monitor, at its defaults, on udp.
func (c *livenessCluster) run(t *testing.T, m *lvMember, udp *net.UDPConn) {
	var mon atomic.Pointer[liveness.Monitor]
	onChange := func() {
		lm := mon.Load()
		if lm == nil {
			return
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, peer := range c.names {
			if peer == m.name {
				continue
			}
			switch alive := lm.Alive(peer); {
			case !alive && !m.dead[peer]:
				m.dead[peer] = true
				c.rec.markDead(m.name, peer)
			case alive:
				delete(m.dead, peer)
			}
		}
	}
	lm, err := liveness.New(liveness.Options{Self: m.name, Key: linkKey, Conn: countingUDP{udp, &c.n},
		Logger: logr.Discard(), OnChange: onChange})
	if err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	m.dead = map[string]bool{}
	m.mu.Unlock()
	mon.Store(lm)
	lm.SetMembers(c.all)
	ctx, cancel := context.WithCancel(context.Background())
	m.mon, m.stop, m.done, m.started = lm, cancel, make(chan struct{}), time.Now()
	go func(done chan struct{}) {
		defer close(done)
		_ = lm.Run(ctx)
	}(m.done)
}

// kill stops member i's monitor: its socket closes, nothing is sent.
func (c *livenessCluster) kill(t *testing.T, i int) {
	m := c.members[i]
	m.stop()
	<-m.done
	c.gone.Add(m.mon.Stats().Suspicions)
	m.mon = nil
}

// restart runs member i again on its own port (a new incarnation).
func (c *livenessCluster) restart(t *testing.T, i int) {
	m := c.members[i]
	udp, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(m.addr))
	if err != nil {
		t.Fatalf("restarting %s: %v", m.name, err)
	}
	c.run(t, m, udp)
}

// status tells how far from converged the cluster is.
func (c *livenessCluster) status() string {
	lo, hi := len(c.names), 0
	for _, m := range c.members {
		if m.mon == nil {
			continue
		}
		alive := 1
		for _, o := range c.members {
			if o != m && m.mon.Alive(o.name) {
				alive++
			}
		}
		lo, hi = min(lo, alive), max(hi, alive)
	}
	return fmt.Sprintf("members see %d to %d members alive; %d suspicions, %d marked dead while running",
		lo, hi, c.suspicions(), len(c.rec.falseDeaths()))
}

func (c *livenessCluster) converged() bool {
	for _, m := range c.members {
		if m.mon == nil {
			continue
		}
		if !m.mon.Connected() {
			return false
		}
		for _, o := range c.members {
			if o != m && o.mon != nil && !m.mon.Alive(o.name) {
				return false
			}
		}
	}
	return true
}

func (c *livenessCluster) traffic() traffic {
	return traffic{udpPackets: c.n.udpPackets.Load(), udpBytes: c.n.udpBytes.Load()}
}

// stalls counts the ticks at which a running monitor was behind (its
// Stats.Stalls) and, approximately, all its ticks (elapsed / Interval).
func (c *livenessCluster) stalls() (behind, ticks uint64) {
	for _, m := range c.members {
		if m.mon != nil {
			behind += m.mon.Stats().Stalls
			ticks += uint64(time.Since(m.started) / liveness.DefaultInterval)
		}
	}
	return behind, ticks
}

// streamCost: pkg/liveness has no stream; all its traffic is in the window.
func (c *livenessCluster) streamCost(*testing.T) (uint64, time.Duration) { return 0, 0 }

// suspicions counts the neighbours each monitor suspected (silent for
// the timeout), before asking the others.
func (c *livenessCluster) suspicions() uint64 {
	n := c.gone.Load()
	for _, m := range c.members {
		if m.mon != nil {
			n += m.mon.Stats().Suspicions
		}
	}
	return n
}

func (c *livenessCluster) settings() string {
	return fmt.Sprintf("pkg/liveness defaults: Interval %v, Timeout %v, SuspectFor %v, Neighbours %d (each side), HMAC-SHA256 key",
		liveness.DefaultInterval, liveness.DefaultTimeout, liveness.DefaultTimeout/3, liveness.DefaultNeighbours)
}

func (c *livenessCluster) close() {
	for _, m := range c.members {
		if m.mon != nil {
			m.stop()
			<-m.done
		}
	}
}
