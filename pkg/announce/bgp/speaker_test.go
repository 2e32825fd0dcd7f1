package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vip-lb/vip/pkg/announce"
	"github.com/vip-lb/vip/pkg/bgpconfig"
)

var (
	peer4 = netip.MustParseAddr("10.77.0.1")
	peer6 = netip.MustParseAddr("fd00:77::1")
	vipA  = netip.MustParseAddr("10.78.0.10")
	vipB  = netip.MustParseAddr("10.78.0.11")
	vip6  = netip.MustParseAddr("fd00:78::10")
)

func testConfig() bgpconfig.Config {
	return bgpconfig.Config{
		AS: 64513, RouterID: netip.MustParseAddr("10.77.0.11"),
		HoldTime: 9 * time.Second, KeepaliveInterval: 3 * time.Second, ConnectRetry: time.Second,
		Communities: []uint32{65000<<16 | 1}, LargeCommunities: []bgpconfig.LargeCommunity{{Global: 1, Local1: 2, Local2: 3}}, LocalPref: 150,
		Peers: []bgpconfig.Peer{{Address: peer4, AS: 64512, Password: "pw", MultihopTTL: 3}},
	}
}

type harness struct {
	s   *Speaker
	r   *fakeRouter
	b   *fakeBinder
	reg *prometheus.Registry

	mu     sync.Mutex
	events []string
}

func newHarness(t *testing.T, cfg bgpconfig.Config) *harness {
	t.Helper()
	h := &harness{r: newFakeRouter(), b: newFakeBinder(), reg: prometheus.NewRegistry()}
	s, err := newSpeaker(context.Background(), Options{
		Config: cfg, Registerer: h.reg,
		OnSessionChange: func(p netip.Addr, up bool, state string) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.events = append(h.events, p.String()+" "+state)
		},
	}, h.r, h.b)
	if err != nil {
		t.Fatal(err)
	}
	h.s = s
	t.Cleanup(func() { _ = s.Close() })
	return h
}

func TestNewStartsInstanceAndPeers(t *testing.T) {
	h := newHarness(t, testConfig())
	if !h.r.started || h.r.global != (globalSpec{AS: 64513, RouterID: netip.MustParseAddr("10.77.0.11"), ListenPort: -1}) {
		t.Fatalf("global = %+v started=%v", h.r.global, h.r.started)
	}
	p := h.r.peers[peer4]
	want := peerSpec{
		Peer:     bgpconfig.Peer{Address: peer4, Port: 179, AS: 64512, Password: "pw", MultihopTTL: 3},
		HoldTime: 9 * time.Second, Keepalive: 3 * time.Second, ConnectRetry: time.Second, IPv4: true,
	}
	if !reflect.DeepEqual(p, want) {
		t.Fatalf("peer spec\n got %+v\nwant %+v", p, want)
	}
	if _, err := newSpeaker(context.Background(), Options{Config: bgpconfig.Config{AS: 1}}, newFakeRouter(), newFakeBinder()); !errors.Is(err, bgpconfig.ErrInvalid) {
		t.Fatalf("invalid config: err = %v", err)
	}
}

func TestAnnounceRefcountsOwners(t *testing.T) {
	h := newHarness(t, testConfig())
	ctx := context.Background()
	if err := h.s.Announce(ctx, "ns/a", vipA, ""); err != nil {
		t.Fatal(err)
	}
	if err := h.s.Announce(ctx, "ns/b", vipA, ""); err != nil {
		t.Fatal(err)
	}
	if err := h.s.Announce(ctx, "ns/a", vipA, ""); err != nil { // again: no-op
		t.Fatal(err)
	}
	if got := h.r.prefixes(); !reflect.DeepEqual(got, []string{"10.78.0.10/32"}) {
		t.Fatalf("paths = %v", got)
	}
	if n := strings.Count(strings.Join(h.r.calls, "\n"), "addpath"); n != 1 {
		t.Fatalf("%d AddPath calls for one address: %v", n, h.r.calls)
	}
	p, _ := h.r.path("10.78.0.10/32")
	if p.LocalPref != 150 || !reflect.DeepEqual(p.Communities, []uint32{65000<<16 | 1}) || len(p.LargeCommunities) != 1 || p.NextHop.IsValid() {
		t.Fatalf("path attributes = %+v", p)
	}
	if h.b.ifaces[vipA] != "lo" {
		t.Fatalf("bound on %q, want lo", h.b.ifaces[vipA])
	}
	if v := testutil.ToFloat64(h.s.m.paths); v != 1 {
		t.Fatalf("vip_agent_bgp_paths_advertised = %v", v)
	}

	if err := h.s.Withdraw(ctx, "ns/a", vipA); err != nil {
		t.Fatal(err)
	}
	if len(h.r.prefixes()) != 1 || len(h.b.Held()) != 1 {
		t.Fatalf("withdrawn while another owner holds it: paths %v held %v", h.r.prefixes(), h.b.Held())
	}
	if err := h.s.Withdraw(ctx, "ns/b", vipA); err != nil {
		t.Fatal(err)
	}
	if len(h.r.prefixes()) != 0 || len(h.b.Held()) != 0 {
		t.Fatalf("after the last owner: paths %v held %v", h.r.prefixes(), h.b.Held())
	}
	// The route goes before the address.
	calls := strings.Join(h.r.calls, ",")
	if !strings.HasSuffix(calls, "delpath 10.78.0.10/32") {
		t.Fatalf("calls = %s", calls)
	}
	if err := h.s.Withdraw(ctx, "ns/b", vipA); err != nil {
		t.Fatalf("withdrawing again: %v", err)
	}
	if v := testutil.ToFloat64(h.s.m.paths); v != 0 {
		t.Fatalf("vip_agent_bgp_paths_advertised = %v", v)
	}
}

func TestAnnounceInterfaceAndFamilies(t *testing.T) {
	h := newHarness(t, testConfig())
	ctx := context.Background()
	if err := h.s.Announce(ctx, "x", vipB, "vip0"); err != nil {
		t.Fatal(err)
	}
	if h.b.ifaces[vipB] != "vip0" {
		t.Fatalf("bound on %q", h.b.ifaces[vipB])
	}
	if err := h.s.Announce(ctx, "x", vip6, ""); !errors.Is(err, ErrNoPeerForFamily) {
		t.Fatalf("IPv6 address with only an IPv4 peer: err = %v", err)
	}
	if len(h.b.Held()) != 1 {
		t.Fatalf("held = %v", h.b.Held())
	}
	if err := h.s.Announce(ctx, "x", netip.MustParseAddr("127.0.0.1"), ""); !errors.Is(err, announce.ErrInvalidAddress) {
		t.Fatalf("loopback: err = %v", err)
	}

	// With an IPv6 peer, the /128 goes out (next hop filled per session);
	// an IPv4 source address applies to the IPv4 session only.
	cfg := testConfig()
	cfg.SourceIP = netip.MustParseAddr("10.77.0.11")
	cfg.Peers = append(cfg.Peers, bgpconfig.Peer{Address: peer6, AS: 64512})
	if err := h.s.Reconfigure(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if p := h.r.peers[peer6]; !p.IPv6 || p.IPv4 || p.SourceIP.IsValid() {
		t.Fatalf("IPv6 peer: %+v", p)
	}
	if p := h.r.peers[peer4]; p.SourceIP != cfg.SourceIP {
		t.Fatalf("IPv4 peer source = %v", p.SourceIP)
	}
	if err := h.s.Announce(ctx, "x", vip6, ""); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.r.path("fd00:78::10/128"); !ok {
		t.Fatalf("paths = %v", h.r.prefixes())
	}

	// An IPv6 next hop makes the IPv4 session carry IPv6 too (MP-BGP).
	cfg.NextHop6 = netip.MustParseAddr("fd00:77::11")
	if err := h.s.Reconfigure(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if p := h.r.peers[peer4]; !p.IPv4 || !p.IPv6 {
		t.Fatalf("IPv4 peer families with an IPv6 next hop: %+v", p)
	}
	if p, _ := h.r.path("fd00:78::10/128"); p.NextHop != cfg.NextHop6 {
		t.Fatalf("next hop = %v", p.NextHop)
	}
}

func TestAnnounceFailureRollsBack(t *testing.T) {
	h := newHarness(t, testConfig())
	ctx := context.Background()
	h.r.failAdd = errors.New("boom")
	if err := h.s.Announce(ctx, "x", vipA, ""); err == nil {
		t.Fatal("no error")
	}
	if len(h.b.Held()) != 0 || len(h.s.vips) != 0 {
		t.Fatalf("binding kept after a failed AddPath: %v", h.b.Held())
	}
	h.r.failAdd = nil
	if err := h.s.Announce(ctx, "x", vipA, ""); err != nil {
		t.Fatal(err)
	}
	h.b.failAdd = announce.ErrForeignAddress
	if err := h.s.Announce(ctx, "y", vipB, ""); !errors.Is(err, announce.ErrForeignAddress) {
		t.Fatalf("err = %v", err)
	}
	if got := h.r.prefixes(); !reflect.DeepEqual(got, []string{"10.78.0.10/32"}) {
		t.Fatalf("paths = %v", got)
	}
	if v := testutil.ToFloat64(h.s.m.errs.WithLabelValues(OpAnnounce)); v != 2 {
		t.Fatalf("announce errors = %v", v)
	}
}

func TestCloseWithdrawsStopsAndUnbinds(t *testing.T) {
	for _, gr := range []bool{false, true} {
		t.Run(fmt.Sprintf("graceful-restart=%v", gr), func(t *testing.T) { testClose(t, gr) })
	}
}

// testClose: Close ends the sessions (withdrawing every route first only
// with graceful restart, whose peers would keep a closed session's routes),
// unbinds the addresses, and reports no session down.
func testClose(t *testing.T, gracefulRestart bool) {
	c := testConfig()
	c.GracefulRestart = gracefulRestart
	h := newHarness(t, c)
	ctx := context.Background()
	for _, v := range []netip.Addr{vipA, vipB} {
		if err := h.s.Announce(ctx, "o", v, ""); err != nil {
			t.Fatal(err)
		}
	}
	h.r.emit(peerEvent{Peer: peer4, State: "established"})
	if err := h.s.Close(); err != nil {
		t.Fatal(err)
	}
	h.r.emit(peerEvent{Peer: peer4, State: "idle"})
	wantDeleteAll := map[bool]int{true: 1}[gracefulRestart]
	if h.r.deleteAll != wantDeleteAll || h.r.started || !h.b.removed || !h.b.closed {
		t.Fatalf("deleteAll=%d (want %d) started=%v removed=%v closed=%v", h.r.deleteAll, wantDeleteAll, h.r.started, h.b.removed, h.b.closed)
	}
	calls := strings.Join(h.r.calls, ",")
	if i, j := strings.Index(calls, "delall"), strings.Index(calls, "stop"); j < 0 || (gracefulRestart && (i < 0 || j < i)) {
		t.Fatalf("with graceful restart the routes must be withdrawn before the sessions stop: %v", h.r.calls)
	}
	if err := h.s.Announce(ctx, "o", vipA, ""); !errors.Is(err, announce.ErrClosed) {
		t.Fatalf("Announce after Close: %v", err)
	}
	if err := h.s.Withdraw(ctx, "o", vipA); err != nil {
		t.Fatalf("Withdraw after Close: %v", err)
	}
	if err := h.s.Close(); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !reflect.DeepEqual(h.events, []string{"10.77.0.1 established"}) {
		t.Fatalf("session callbacks = %v (the stop must not report a session down)", h.events)
	}
}

func TestSessionEvents(t *testing.T) {
	h := newHarness(t, testConfig())
	up := func() float64 { return testutil.ToFloat64(h.s.m.up.WithLabelValues(peer4.String())) }
	if up() != 0 {
		t.Fatal("session up before any event")
	}
	for _, st := range []string{"active", "opensent", "openconfirm", "established", "established"} {
		h.r.emit(peerEvent{Peer: peer4, State: st})
	}
	if up() != 1 {
		t.Fatal("vip_agent_bgp_session_up not 1")
	}
	h.r.emit(peerEvent{Peer: peer4, State: "idle"})
	h.r.emit(peerEvent{Peer: netip.MustParseAddr("10.9.9.9"), State: "established"}) // unknown peer
	if up() != 0 {
		t.Fatal("vip_agent_bgp_session_up not 0 after the session went down")
	}
	h.mu.Lock()
	got := append([]string(nil), h.events...)
	h.mu.Unlock()
	if !reflect.DeepEqual(got, []string{"10.77.0.1 established", "10.77.0.1 idle"}) {
		t.Fatalf("callbacks = %v", got)
	}
	if ps := h.s.Peers(); len(ps) != 1 || ps[0].State != "idle" {
		t.Fatalf("Peers() = %v", ps)
	}
	// The dropped session is re-created so it dials again at once.
	deadline := time.Now().Add(time.Minute) // eventual: generous, not a limit
	for {
		h.r.mu.Lock()
		calls := strings.Join(h.r.calls, ",")
		h.r.mu.Unlock()
		if strings.HasSuffix(calls, "delpeer 10.77.0.1,addpeer 10.77.0.1") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("session not re-created: %s", calls)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestReconfigure(t *testing.T) {
	h := newHarness(t, testConfig())
	ctx := context.Background()
	if err := h.s.Announce(ctx, "o", vipA, ""); err != nil {
		t.Fatal(err)
	}
	h.r.emit(peerEvent{Peer: peer4, State: "established"})

	// Same configuration: nothing happens.
	n := len(h.r.calls)
	if err := h.s.Reconfigure(ctx, testConfig()); err != nil || len(h.r.calls) != n {
		t.Fatalf("no-op reconfigure made calls %v (err %v)", h.r.calls[n:], err)
	}

	// A changed password restarts that session only; a new peer is added.
	cfg := testConfig()
	cfg.Peers[0].Password = "new"
	other := netip.MustParseAddr("10.77.0.2")
	cfg.Peers = append(cfg.Peers, bgpconfig.Peer{Address: other, AS: 64512})
	if err := h.s.Reconfigure(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if got := h.r.calls[n:]; !reflect.DeepEqual(got, []string{"delpeer 10.77.0.1", "addpeer 10.77.0.1", "addpeer 10.77.0.2"}) {
		t.Fatalf("calls = %v", got)
	}
	if h.r.peers[peer4].Password != "new" {
		t.Fatal("password not applied")
	}

	// New communities: the route is advertised again with them.
	n = len(h.r.calls)
	cfg.Communities = nil
	if err := h.s.Reconfigure(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if got := h.r.calls[n:]; !reflect.DeepEqual(got, []string{"addpath 10.78.0.10/32"}) {
		t.Fatalf("calls = %v", got)
	}
	if p, _ := h.r.path("10.78.0.10/32"); p.Communities != nil {
		t.Fatalf("communities = %v", p.Communities)
	}

	// New router ID: the instance restarts, peers and routes come back.
	cfg.RouterID = netip.MustParseAddr("10.77.0.99")
	if err := h.s.Reconfigure(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if h.r.starts != 2 || h.r.global.RouterID != cfg.RouterID || len(h.r.peerList()) != 2 || len(h.r.prefixes()) != 1 {
		t.Fatalf("after restart: starts=%d global=%+v peers=%v paths=%v", h.r.starts, h.r.global, h.r.peerList(), h.r.prefixes())
	}
	// Withdraw still finds the path by its new UUID.
	if err := h.s.Withdraw(ctx, "o", vipA); err != nil || len(h.r.prefixes()) != 0 {
		t.Fatalf("withdraw after restart: %v, paths %v", err, h.r.prefixes())
	}

	// A removed peer is dropped without a session-down callback.
	cfg.Peers = cfg.Peers[1:]
	if err := h.s.Reconfigure(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	h.r.emit(peerEvent{Peer: peer4, State: "idle"})
	if got := h.r.peerList(); !reflect.DeepEqual(got, []netip.Addr{other}) {
		t.Fatalf("peers = %v", got)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range h.events {
		if strings.HasSuffix(e, "idle") {
			t.Fatalf("session-down callback for a removed peer: %v", h.events)
		}
	}
	if err := h.s.Reconfigure(ctx, bgpconfig.Config{}); !errors.Is(err, bgpconfig.ErrInvalid) {
		t.Fatalf("invalid reconfigure: %v", err)
	}
}

func TestConcurrentAnnounceWithdraw(t *testing.T) {
	h := newHarness(t, testConfig())
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			owner := string(rune('a' + i))
			for j := 0; j < 200; j++ {
				v := netip.AddrFrom4([4]byte{10, 78, 1, byte(j % 16)})
				_ = h.s.Announce(ctx, owner, v, "")
				if j%3 == 0 {
					_ = h.s.Withdraw(ctx, owner, v)
				}
			}
			for j := 0; j < 16; j++ {
				_ = h.s.Withdraw(ctx, owner, netip.AddrFrom4([4]byte{10, 78, 1, byte(j)}))
			}
		}(i)
	}
	wg.Wait()
	if len(h.r.prefixes()) != 0 || len(h.b.Held()) != 0 || len(h.s.Advertised()) != 0 {
		t.Fatalf("left behind: paths %v held %v", h.r.prefixes(), h.b.Held())
	}
}
