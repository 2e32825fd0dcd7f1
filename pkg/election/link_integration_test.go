package election

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vip-lb/vip/pkg/liveness"
	"github.com/vip-lb/vip/pkg/testbed"
)

// TestLinkIntegration runs the ownership scenarios in link mode: real API
// server, real liveness monitors on loopback UDP, a link that can be cut
// per node.
func TestLinkIntegration(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real API server")
	}
	env := testbed.Start(t)
	t.Run("failover-and-quiet", func(t *testing.T) { testLinkFailover(t, env) })
	t.Run("cut-from-link", func(t *testing.T) { testLinkCut(t, env) })
	t.Run("cut-from-api", func(t *testing.T) { testLinkAPICut(t, env) })
}

// cutConn is a UDP socket whose traffic can be dropped both ways.
type cutConn struct {
	*net.UDPConn
	cut atomic.Bool
}

func (c *cutConn) ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error) {
	for {
		n, from, err := c.UDPConn.ReadFromUDPAddrPort(b)
		if err != nil || !c.cut.Load() {
			return n, from, err
		}
	}
}

func (c *cutConn) WriteToUDPAddrPort(b []byte, to netip.AddrPort) (int, error) {
	if c.cut.Load() {
		return len(b), nil
	}
	return c.UDPConn.WriteToUDPAddrPort(b, to)
}

// linkLab gives each node of a cluster a liveness monitor.
type linkLab struct {
	t     *testing.T
	mu    sync.Mutex
	conns map[string]*cutConn
	mons  map[string]*liveness.Monitor
	els   map[string]*atomic.Pointer[Elector]
	stop  map[string]context.CancelFunc
}

var linkKey = []byte("link test key, 32 bytes long....")

// opts is the cluster's Options hook: link mode with a new monitor.
func (ll *linkLab) opts(o *Options) {
	t := ll.t
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	conn := &cutConn{UDPConn: udp}
	el := &atomic.Pointer[Elector]{}
	name := o.NodeName
	fresh, changed := LinkHooks(el)
	m, err := liveness.New(liveness.Options{Self: name, Key: linkKey, Conn: conn, JoinGrace: 300 * time.Millisecond,
		Logger: testr.New(t).WithValues("on", name), MemberFresh: fresh, OnChange: changed})
	if err != nil {
		t.Fatal(err)
	}
	o.Link, o.LinkAddress = m, udp.LocalAddr().String()
	o.SettleTime = 2 * time.Second
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = m.Run(ctx) }()
	t.Cleanup(cancel)
	ll.mu.Lock()
	ll.conns[name], ll.mons[name], ll.els[name], ll.stop[name] = conn, m, el, cancel
	ll.mu.Unlock()
}

func newLinkCluster(t *testing.T, env *testbed.Env, name string) (*cluster, *linkLab) {
	ll := &linkLab{t: t, conns: map[string]*cutConn{}, mons: map[string]*liveness.Monitor{},
		els: map[string]*atomic.Pointer[Elector]{}, stop: map[string]context.CancelFunc{}}
	c := newCluster(t, env, name, 30, ll.opts)
	return c, ll
}

// start starts the nodes and wires each monitor to its Elector.
func (ll *linkLab) start(c *cluster, names ...string) {
	for _, n := range names {
		c.startNode(n)
		ll.els[n].Store(c.nodes[n].e)
		c.nodes[n].e.Kick()
	}
	c.start() // waits until every node sees every other alive
}

func testLinkFailover(t *testing.T, env *testbed.Env) {
	c, ll := newLinkCluster(t, env, "link-failover")
	nodes := []string{"node-1", "node-2", "node-3"}
	ll.start(c, nodes...)
	c.enqueueAll()
	owners := c.waitOwned(20 * time.Second)

	// At rest: no Lease writes but the membership renewal (every 10s).
	before := map[string]int64{}
	for _, a := range c.running() {
		before[a.name] = a.writes.Load()
	}
	t0 := time.Now()
	waitFor(t, 30*time.Second, "a membership renewal", func() bool {
		for _, a := range c.running() {
			if a.writes.Load() > before[a.name] {
				return true
			}
		}
		return false
	})
	quiet := time.Since(t0)
	for _, a := range c.running() {
		if w := a.writes.Load() - before[a.name]; w > 1 {
			t.Errorf("%s wrote %d times in %v at rest", a.name, w, quiet)
		}
	}
	t.Logf("at rest: first write after %v (membership renewal)", quiet.Round(time.Millisecond))

	died := time.Now()
	ll.stop["node-2"]()
	c.crash("node-2")
	after := c.waitOwned(10 * time.Second)
	var lat []time.Duration
	for _, s := range c.services {
		switch {
		case owners[s] == "node-2":
			if want := Preferred(c.key(s), []string{"node-1", "node-3"}); after[s] != want {
				t.Errorf("%s moved to %s, want %s", s, after[s], want)
			}
			lat = append(lat, c.announcedSince(s).Sub(died))
		case after[s] != owners[s]:
			t.Errorf("%s moved from live %s to %s", s, owners[s], after[s])
		}
	}
	med, worst := stats(lat)
	t.Logf("link takeover after a crash: %d Services, median %v, max %v (link timeout %v)", len(lat), med, worst, liveness.DefaultTimeout)
	c.checkNoOverlap()
}

// testLinkCut: node-2 loses the link but keeps the API: it fences and
// withdraws, its Services move; back on the link it unfences and gets them
// back after SettleTime; never two announcers.
func testLinkCut(t *testing.T, env *testbed.Env) {
	c, ll := newLinkCluster(t, env, "link-cut")
	ll.start(c, "node-1", "node-2", "node-3")
	c.enqueueAll()
	owners := c.waitOwned(20 * time.Second)
	n2 := c.nodes["node-2"]
	cut := time.Now()
	ll.conns["node-2"].cut.Store(true)
	waitFor(t, 5*time.Second, "node-2 fences", n2.e.Fenced)
	waitFor(t, 5*time.Second, "node-2 withdraws everything", func() bool { return c.announcedBy("node-2") == 0 })
	t.Logf("node-2 withdrew %v after losing the link", time.Since(cut).Round(time.Millisecond))
	after := c.waitOwned(10 * time.Second)
	for _, s := range c.services {
		if owners[s] == "node-2" && after[s] != Preferred(c.key(s), []string{"node-1", "node-3"}) {
			t.Errorf("%s: %s after the cut", s, after[s])
		}
		if owners[s] != "node-2" && after[s] != owners[s] {
			t.Errorf("%s moved from live %s to %s", s, owners[s], after[s])
		}
	}
	ll.conns["node-2"].cut.Store(false)
	waitFor(t, 30*time.Second, "node-2 unfences", func() bool { return !n2.e.Fenced() })
	waitFor(t, 30*time.Second, "Services back on node-2", func() bool {
		o := c.owners()
		for _, s := range c.services {
			if o[s] != owners[s] {
				return false
			}
		}
		return true
	})
	c.checkNoOverlap()
}

// testLinkAPICut: node-2 loses the API server but not the link: it keeps
// serving, nobody takes over, nobody fences.
func testLinkAPICut(t *testing.T, env *testbed.Env) {
	c, ll := newLinkCluster(t, env, "link-apicut")
	ll.start(c, "node-1", "node-2", "node-3")
	c.enqueueAll()
	owners := c.waitOwned(20 * time.Second)
	n2 := c.nodes["node-2"]
	mine := c.announcedBy("node-2")
	n2.cut.setCut(true)
	// Wait until node-2 has failed to write its membership renewal: the
	// old design would have fenced it long before.
	waitFor(t, 40*time.Second, "node-2's renewal fails", func() bool {
		return testutil.ToFloat64(n2.e.metrics.errors.WithLabelValues(opHeartbeat)) > 0
	})
	if n2.e.Fenced() || c.announcedBy("node-2") != mine {
		t.Errorf("node-2 cut from the API only: fenced %v, announces %d of its %d", n2.e.Fenced(), c.announcedBy("node-2"), mine)
	}
	for _, a := range c.running() {
		if n := testutil.ToFloat64(a.e.metrics.takeovers); n != 0 {
			t.Errorf("%s took over %v Services", a.name, n)
		}
		if a.name != "node-2" && !a.e.Alive("node-2") {
			t.Errorf("%s judges node-2 dead", a.name)
		}
	}
	n2.cut.setCut(false)
	if o := c.owners(); len(o) != len(owners) {
		t.Errorf("owners changed: %v", o)
	}
	for s, o := range c.owners() {
		if o != owners[s] {
			t.Errorf("%s: %s, was %s", s, o, owners[s])
		}
	}
	c.checkNoOverlap()
}
