package bgp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
	"github.com/osrg/gobgp/v3/pkg/server"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/vip-lb/vip/pkg/bgpconfig"
)

// These tests run the real GoBGP speaker against a second GoBGP instance
// acting as the upstream router, over the loopback interface (no root and
// no namespaces needed; addresses are bound through a fake binder).

const (
	routerAS = 64512
	nodeAS   = 64513
	// holdTime is long on both sides, so that a route that goes within the
	// tests' deadlines (well under it) went because a session was closed,
	// never because a hold timer ran out.
	holdTime = 3 * time.Minute
	// deadline bounds waits for an eventual condition; generous, it only
	// stops a test that would otherwise hang.
	deadline = 30 * time.Second
)

// upstream is a GoBGP instance that accepts the speaker's session.
type upstream struct {
	s    *server.BgpServer
	port int
}

func freePort(t *testing.T, network, addr string) int {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("cannot listen on %s: %v", addr, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startUpstream(t *testing.T, listen, neighbor netip.Addr, password string) *upstream {
	t.Helper()
	port := freePort(t, "tcp", netip.AddrPortFrom(listen, 0).String())
	s := server.NewBgpServer()
	go s.Serve()
	ctx := context.Background()
	if err := s.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: routerAS, RouterId: "10.77.0.1", ListenPort: int32(port), ListenAddresses: []string{listen.String()},
	}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.StopBgp(context.Background(), &api.StopBgpRequest{}) })
	fam := family(neighbor.Is6())
	if err := s.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
		Conf: &api.PeerConf{NeighborAddress: neighbor.String(), PeerAsn: nodeAS, AuthPassword: password},
		Timers: &api.Timers{Config: &api.TimersConfig{ConnectRetry: 1,
			HoldTime: uint64(holdTime / time.Second), KeepaliveInterval: uint64(holdTime / 3 / time.Second)}},
		Transport: &api.Transport{PassiveMode: true},
		AfiSafis:  []*api.AfiSafi{{Config: &api.AfiSafiConfig{Family: fam, Enabled: true}}},
	}}); err != nil {
		t.Fatal(err)
	}
	return &upstream{s: s, port: port}
}

// routes returns the upstream's best paths as "prefix via nexthop [attrs]".
func routes(t *testing.T, s *server.BgpServer, v6 bool) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := s.ListPath(context.Background(), &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: family(v6)}, func(d *api.Destination) {
		for _, p := range d.Paths {
			if !p.Best {
				continue
			}
			attrs, err := apiutil.GetNativePathAttributes(p)
			if err != nil {
				t.Errorf("decoding attributes: %v", err)
				continue
			}
			var nh string
			var extra []string
			for _, a := range attrs {
				switch a := a.(type) {
				case *bgp.PathAttributeNextHop:
					nh = a.Value.String()
				case *bgp.PathAttributeMpReachNLRI:
					nh = a.Nexthop.String()
				case *bgp.PathAttributeCommunities:
					for _, c := range a.Value {
						extra = append(extra, fmt.Sprintf("community=%d:%d", c>>16, c&0xffff))
					}
				case *bgp.PathAttributeLargeCommunities:
					extra = append(extra, "large="+a.String())
				case *bgp.PathAttributeAsPath:
					extra = append(extra, "aspath="+a.String())
				}
			}
			out[d.Prefix] = strings.TrimSpace("via " + nh + " " + strings.Join(extra, " "))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// received returns how many paths the speaker received from its peers,
// before its import policy.
func received(t *testing.T, s *Speaker) uint64 {
	t.Helper()
	var n uint64
	err := s.r.(*gobgpRouter).s.ListPeer(context.Background(), &api.ListPeerRequest{}, func(p *api.Peer) {
		for _, af := range p.GetAfiSafis() {
			n += af.GetState().GetReceived()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// count returns how many routes the upstream has under prefix.
func count(t *testing.T, s *server.BgpServer, prefix string) int {
	n := 0
	for k := range routes(t, s, false) {
		if strings.HasPrefix(k, prefix) {
			n++
		}
	}
	return n
}

func eventually(t *testing.T, what string, timeout time.Duration, cond func() bool) time.Duration {
	t.Helper()
	t0 := time.Now()
	for !cond() {
		if time.Since(t0) > timeout {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(t0)
}

func newRealSpeaker(t *testing.T, cfg bgpconfig.Config, events chan<- string) *Speaker {
	t.Helper()
	s, err := newSpeaker(context.Background(), Options{
		Config: cfg, Logger: testr.NewWithOptions(t, testr.Options{Verbosity: 1}), Registerer: prometheus.NewRegistry(),
		OnSessionChange: func(p netip.Addr, up bool, state string) {
			select {
			case events <- fmt.Sprintf("%s %v", p, up):
			default:
			}
		},
	}, newGoBGP(testr.New(t)), newFakeBinder())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestGoBGPAgainstUpstream(t *testing.T) {
	lo1, lo2 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")
	// No password here: GoBGP cannot set TCP MD5 keys on its own listening
	// socket on some kernels; the speaker's side (it dials) is covered by the
	// end-to-end tests against BIRD.
	up := startUpstream(t, lo1, lo2, "")
	events := make(chan string, 16)
	cfg := bgpconfig.Config{
		AS: nodeAS, RouterID: netip.MustParseAddr("10.77.0.11"), SourceIP: lo2,
		HoldTime: holdTime, KeepaliveInterval: holdTime / 3, ConnectRetry: time.Second,
		Communities: []uint32{65000<<16 | 7}, LargeCommunities: []bgpconfig.LargeCommunity{{Global: 64513, Local1: 1, Local2: 2}},
		Peers: []bgpconfig.Peer{{Address: lo1, Port: uint16(up.port), AS: routerAS}},
	}
	s := newRealSpeaker(t, cfg, events)
	select {
	case ev := <-events:
		if ev != "127.0.0.1 true" {
			t.Fatalf("first session event %q", ev)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("session not established")
	}

	ctx := context.Background()
	t0 := time.Now()
	if err := s.Announce(ctx, "ns/svc", vipA, ""); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the /32 at the upstream", deadline, func() bool { return routes(t, up.s, false)["10.78.0.10/32"] != "" })
	t.Logf("Announce -> route at upstream: %v", time.Since(t0))
	got := routes(t, up.s, false)["10.78.0.10/32"]
	for _, want := range []string{"via 127.0.0.2", "community=65000:7", "64513:1:2", "AsPath: 64513"} {
		if !strings.Contains(got, want) {
			t.Errorf("route %q lacks %q", got, want)
		}
	}

	// Import policy: the upstream's own route never enters the speaker's RIB.
	nlri, _ := anypb.New(&api.IPAddressPrefix{Prefix: "10.99.0.0", PrefixLen: 24})
	origin, _ := anypb.New(&api.OriginAttribute{})
	nh, _ := anypb.New(&api.NextHopAttribute{NextHop: "127.0.0.1"})
	if _, err := up.s.AddPath(ctx, &api.AddPathRequest{Path: &api.Path{Family: family(false), Nlri: nlri, Pattrs: []*anypb.Any{origin, nh}}}); err != nil {
		t.Fatal(err)
	}
	// Once the speaker has received the route (counted before its import
	// policy), its RIB must still hold only its own.
	eventually(t, "the upstream's route received by the speaker", deadline, func() bool { return received(t, s) > 0 })
	if r := routes(t, s.r.(*gobgpRouter).s, false); len(r) != 1 || r["10.78.0.10/32"] == "" {
		t.Fatalf("speaker RIB = %v; want only its own route (import must reject)", r)
	}

	if err := s.Withdraw(ctx, "ns/svc", vipA); err != nil {
		t.Fatal(err)
	}
	d := eventually(t, "the withdrawal at the upstream", deadline, func() bool { return routes(t, up.s, false)["10.78.0.10/32"] == "" })
	t.Logf("Withdraw -> route gone at upstream: %v", d)

	// Close: routes gone and session down at the upstream at once.
	for i := 0; i < 50; i++ {
		if err := s.Announce(ctx, "o", netip.AddrFrom4([4]byte{10, 78, 2, byte(i)}), ""); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "50 routes at the upstream", deadline, func() bool { return count(t, up.s, "10.78.2.") == 50 })
	t0 = time.Now()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Within the deadline, far shorter than the hold time: Close ended the
	// session itself (a NOTIFICATION), the upstream did not time it out.
	d = eventually(t, "all routes gone after Close", deadline, func() bool { return count(t, up.s, "10.78.") == 0 })
	t.Logf("Close -> %d routes gone at upstream: %v (Close took %v)", 50, d, time.Since(t0))
	select {
	case ev := <-events:
		t.Fatalf("Close reported a session change: %s", ev)
	default:
	}
}

func TestGoBGPIPv6(t *testing.T) {
	lo6 := netip.MustParseAddr("::1")
	if l, err := net.Listen("tcp", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		l.Close()
	}
	up := startUpstream(t, lo6, lo6, "")
	events := make(chan string, 16)
	cfg := bgpconfig.Config{
		AS: nodeAS, RouterID: netip.MustParseAddr("10.77.0.11"), SourceIP: lo6,
		// GoBGP refuses IPv6 loopback next hops, so give a real one.
		NextHop6: netip.MustParseAddr("fd00:77::11"),
		HoldTime: 9 * time.Second, KeepaliveInterval: 3 * time.Second, ConnectRetry: time.Second,
		Peers: []bgpconfig.Peer{{Address: lo6, Port: uint16(up.port), AS: routerAS}},
	}
	s := newRealSpeaker(t, cfg, events)
	select {
	case <-events:
	case <-time.After(15 * time.Second):
		t.Fatal("IPv6 session not established")
	}
	if err := s.Announce(context.Background(), "o", vip6, ""); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the /128 at the upstream", deadline, func() bool { return routes(t, up.s, true)["fd00:78::10/128"] != "" })
	if got := routes(t, up.s, true)["fd00:78::10/128"]; !strings.HasPrefix(got, "via fd00:77::11") {
		t.Fatalf("route %q; want next hop fd00:77::11", got)
	}
	if err := s.Announce(context.Background(), "o", vipA, ""); err == nil {
		t.Fatal("IPv4 address announced with only an IPv6 peer and no IPv4 next hop")
	}
	if got := routes(t, up.s, false); len(got) != 0 {
		t.Fatalf("IPv4 routes at the upstream: %v", got)
	}
}
