package memberlistcmp

import (
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metrics "github.com/hashicorp/go-metrics"
	"github.com/hashicorp/memberlist"
)

// The 32-byte key (AES-256-GCM) of the tuned cluster: memberlist then
// encrypts and authenticates every datagram and stream.
var gossipKey = []byte("vip-memberlist-comparison-key-32")

// memberlistConfig is the configuration of one member: "default" is
// memberlist's DefaultLANConfig as is; "tuned" aims at sub-second
// detection, authenticated.
func memberlistConfig(mode string) *memberlist.Config {
	c := memberlist.DefaultLANConfig()
	if mode == "tuned" {
		c.ProbeInterval = 100 * time.Millisecond
		c.ProbeTimeout = 50 * time.Millisecond
		c.SuspicionMult = 2 // suspect for 2·max(1, log10 N) probe intervals, no confirmations awaited
		c.GossipInterval = 20 * time.Millisecond
		c.SecretKey = gossipKey
	}
	return c
}

func describe(c *memberlist.Config) string {
	return fmt.Sprintf("ProbeInterval %v, ProbeTimeout %v, SuspicionMult %d, SuspicionMaxTimeoutMult %d, GossipInterval %v, GossipNodes %d, IndirectChecks %d, RetransmitMult %d, PushPullInterval %v, TCP pings %v, AwarenessMaxMultiplier %d, key %v",
		c.ProbeInterval, c.ProbeTimeout, c.SuspicionMult, c.SuspicionMaxTimeoutMult, c.GossipInterval, c.GossipNodes,
		c.IndirectChecks, c.RetransmitMult, c.PushPullInterval, !c.DisableTcpPings, c.AwarenessMaxMultiplier, len(c.SecretKey) > 0)
}

// counters is what all members sent.
type counters struct {
	udpPackets, udpBytes, tcpBytes, tcpConns atomic.Uint64
}

// countingTransport counts what memberlist's own UDP+TCP transport sends.
type countingTransport struct {
	*memberlist.NetTransport
	n       *counters
	streams chan net.Conn
	stop    chan struct{} // closed at Shutdown: incoming streams are closed
	done    chan struct{} // closed once the NetTransport is shut down
}

func newCountingTransport(port int, n *counters) (*countingTransport, error) {
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{"127.0.0.1"}, BindPort: port, Logger: log.New(io.Discard, "", 0)})
	if err != nil {
		return nil, err
	}
	ct := &countingTransport{NetTransport: nt, n: n, streams: make(chan net.Conn), stop: make(chan struct{}), done: make(chan struct{})}
	// Forward incoming streams, counted; after Shutdown keep draining them
	// until the NetTransport's listener has stopped (it waits for its sends).
	go func() {
		for {
			select {
			case c := <-nt.StreamCh():
				select {
				case ct.streams <- countingConn{c, n}:
				case <-ct.stop:
					_ = c.Close()
				}
			case <-ct.done:
				return
			}
		}
	}()
	return ct, nil
}

func (t *countingTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	at, err := t.NetTransport.WriteTo(b, addr)
	if err == nil {
		t.n.udpPackets.Add(1)
		t.n.udpBytes.Add(uint64(len(b)))
	}
	return at, err
}

func (t *countingTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	c, err := t.NetTransport.DialTimeout(addr, timeout)
	if err != nil {
		return nil, err
	}
	t.n.tcpConns.Add(1)
	return countingConn{c, t.n}, nil
}

func (t *countingTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

func (t *countingTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

func (t *countingTransport) StreamCh() <-chan net.Conn { return t.streams }

func (t *countingTransport) Shutdown() error {
	close(t.stop)
	err := t.NetTransport.Shutdown()
	close(t.done)
	return err
}

// countingConn counts the bytes a stream (push-pull, TCP ping) sends.
type countingConn struct {
	net.Conn
	n *counters
}

func (c countingConn) Write(b []byte) (int, error) {
	k, err := c.Conn.Write(b)
	c.n.tcpBytes.Add(uint64(k))
	return k, err
}

// events tells the recorder when this member marks another one dead.
type events struct {
	self string
	rec  *recorder
}

func (e events) NotifyJoin(*memberlist.Node)   {}
func (e events) NotifyUpdate(*memberlist.Node) {}
func (e events) NotifyLeave(n *memberlist.Node) {
	if n.Name != e.self {
		e.rec.markDead(e.self, n.Name)
	}
}

// go-metrics' sink is process-wide: it forwards to the recorder of the
// cluster being measured.
var (
	metricsOnce sync.Once
	metricsRec  atomic.Pointer[atomic.Uint64]
)

func useMetrics(t *testing.T, suspect *atomic.Uint64) {
	metricsRec.Store(suspect)
	metricsOnce.Do(func() {
		cfg := metrics.DefaultConfig("cmp")
		cfg.EnableHostname, cfg.EnableRuntimeMetrics, cfg.EnableServiceLabel = false, false, false
		if _, err := metrics.NewGlobal(cfg, forwardSink{&metrics.BlackholeSink{}}); err != nil {
			t.Fatal(err)
		}
	})
}

// forwardSink counts memberlist's "memberlist.msg.suspect" metric (one
// per member that accepts a suspicion) for the cluster being measured.
type forwardSink struct{ *metrics.BlackholeSink }

func (forwardSink) IncrCounter(key []string, v float32) {
	forwardSink{}.IncrCounterWithLabels(key, v, nil)
}
func (forwardSink) IncrCounterWithLabels(key []string, _ float32, _ []metrics.Label) {
	if n := metricsRec.Load(); n != nil && strings.HasSuffix(strings.Join(key, "."), "memberlist.msg.suspect") {
		n.Add(1)
	}
}

type mlMember struct {
	port int
	ml   *memberlist.Memberlist
}

type memberlistCluster struct {
	mode    string
	names   []string
	rec     *recorder
	n       counters
	suspect atomic.Uint64 // memberlist.msg.suspect: one per member that accepts a suspicion
	members []*mlMember   // nil ml: stopped
}

func newMemberlistCluster(t *testing.T, mode string, names []string, rec *recorder) *memberlistCluster {
	c := &memberlistCluster{mode: mode, names: names, rec: rec, members: make([]*mlMember, len(names))}
	useMetrics(t, &c.suspect)
	for i := range names {
		c.members[i] = &mlMember{}
	}
	for i := range names {
		c.start(t, i)
	}
	return c
}

// start runs member i (on a new port the first time, its own port after)
// and joins it to a running member.
func (c *memberlistCluster) start(t *testing.T, i int) {
	m := c.members[i]
	tr, err := newCountingTransport(m.port, &c.n)
	if err != nil {
		t.Fatalf("member %s: %v", c.names[i], err)
	}
	m.port = tr.GetAutoBindPort()
	cfg := memberlistConfig(c.mode)
	cfg.Name = c.names[i]
	cfg.Transport = tr
	cfg.BindAddr, cfg.BindPort, cfg.AdvertiseAddr, cfg.AdvertisePort = "127.0.0.1", m.port, "127.0.0.1", m.port
	cfg.Logger = log.New(io.Discard, "", 0)
	cfg.Events = events{self: c.names[i], rec: c.rec}
	ml, err := memberlist.Create(cfg)
	if err != nil {
		t.Fatalf("member %s: %v", c.names[i], err)
	}
	var seeds []string
	for j, o := range c.members {
		if j != i && o.ml != nil {
			seeds = append(seeds, net.JoinHostPort("127.0.0.1", strconv.Itoa(o.port)))
			if len(seeds) == 3 {
				break
			}
		}
	}
	m.ml = ml
	if len(seeds) > 0 {
		if _, err := ml.Join(seeds); err != nil {
			t.Fatalf("member %s joining %v: %v", c.names[i], seeds, err)
		}
	}
}

// kill shuts member i down without leaving: its peers see it fall silent.
func (c *memberlistCluster) kill(t *testing.T, i int) {
	if err := c.members[i].ml.Shutdown(); err != nil {
		t.Fatalf("stopping %s: %v", c.names[i], err)
	}
	c.members[i].ml = nil
}

func (c *memberlistCluster) restart(t *testing.T, i int) { c.start(t, i) }

// status tells how far from converged the cluster is.
func (c *memberlistCluster) status() string {
	lo, hi := len(c.names), 0
	for _, m := range c.members {
		if m.ml == nil {
			continue
		}
		alive := 0
		for _, n := range m.ml.Members() {
			if n.State == memberlist.StateAlive {
				alive++
			}
		}
		lo, hi = min(lo, alive), max(hi, alive)
	}
	return fmt.Sprintf("members see %d to %d members alive; %d suspicions, %d marked dead while running",
		lo, hi, c.suspect.Load(), len(c.rec.falseDeaths()))
}

func (c *memberlistCluster) converged() bool {
	running := 0
	for _, m := range c.members {
		if m.ml != nil {
			running++
		}
	}
	for _, m := range c.members {
		if m.ml == nil {
			continue
		}
		alive := 0
		for _, n := range m.ml.Members() {
			if n.State == memberlist.StateAlive {
				alive++
			}
		}
		if alive != running {
			return false
		}
	}
	return true
}

func (c *memberlistCluster) traffic() traffic {
	return traffic{c.n.udpPackets.Load(), c.n.udpBytes.Load(), c.n.tcpBytes.Load(), c.n.tcpConns.Load()}
}

// streamCost measures one push-pull (member 0 joins member 1 again: the
// same full state exchange as the periodic one) and memberlist's period
// for this size (PushPullInterval, scaled up above 32 members).
func (c *memberlistCluster) streamCost(t *testing.T) (uint64, time.Duration) {
	b0 := c.n.tcpBytes.Load()
	if _, err := c.members[0].ml.Join([]string{net.JoinHostPort("127.0.0.1", strconv.Itoa(c.members[1].port))}); err != nil {
		t.Fatalf("push-pull: %v", err)
	}
	return c.n.tcpBytes.Load() - b0, pushPullScale(memberlistConfig(c.mode).PushPullInterval, len(c.names))
}

// pushPullScale is memberlist's own (unexported) scaling of the period.
func pushPullScale(interval time.Duration, n int) time.Duration {
	if n <= 32 {
		return interval
	}
	return time.Duration(math.Ceil(math.Log2(float64(n))-math.Log2(32))+1) * interval
}

func (c *memberlistCluster) suspicions() uint64 { return c.suspect.Load() }

func (c *memberlistCluster) settings() string {
	return "memberlist v0.7.0 " + describe(memberlistConfig(c.mode))
}

func (c *memberlistCluster) close() {
	for _, m := range c.members {
		if m.ml != nil {
			_ = m.ml.Shutdown()
		}
	}
	metricsRec.Store(nil)
}
