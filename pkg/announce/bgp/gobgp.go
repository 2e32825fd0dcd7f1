package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	api "github.com/osrg/gobgp/v3/api"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
	"github.com/osrg/gobgp/v3/pkg/server"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// gobgpRouter is the router backed by an embedded GoBGP v3 server.
type gobgpRouter struct {
	s *server.BgpServer

	mu sync.Mutex
	// paths maps the UUID of each path this router added to the path, so
	// DeletePath can name the path itself: GoBGP's delete by UUID scans
	// its whole RIB on every call (quadratic when many Services go at
	// once: 2 ms per delete with 5000 paths), its delete by path does not.
	paths map[string]*api.Path
}

var _ router = (*gobgpRouter)(nil)

// importPolicy is the name of the global import policy: local routes only.
const importPolicy = "vip-local-only"

// newGoBGP starts a GoBGP server loop (without BGP configured yet).
func newGoBGP(log logr.Logger) *gobgpRouter {
	s := server.NewBgpServer(server.LoggerOption(&gobgpLogger{log: log}))
	go s.Serve()
	return &gobgpRouter{s: s, paths: map[string]*api.Path{}}
}

func (r *gobgpRouter) Start(ctx context.Context, g globalSpec) error {
	if err := r.s.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: g.AS, RouterId: g.RouterID.String(), ListenPort: g.ListenPort,
	}}); err != nil {
		return fmt.Errorf("starting BGP: %w", err)
	}
	// Never import what peers send: this speaker only originates routes,
	// and learned routes would only cost memory. GoBGP runs its own paths
	// through the global import policy too, so the policy accepts local
	// routes and rejects everything else. StartBgp clears policies, so this
	// runs on every start.
	if err := r.s.AddPolicy(ctx, &api.AddPolicyRequest{Policy: &api.Policy{
		Name: importPolicy,
		Statements: []*api.Statement{{
			Name:       importPolicy + "-local",
			Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL},
			Actions:    &api.Actions{RouteAction: api.RouteAction_ACCEPT},
		}},
	}}); err != nil {
		_ = r.s.StopBgp(context.Background(), &api.StopBgpRequest{})
		return fmt.Errorf("defining the import policy: %w", err)
	}
	if err := r.s.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name: "global", Direction: api.PolicyDirection_IMPORT,
		Policies: []*api.Policy{{Name: importPolicy}}, DefaultAction: api.RouteAction_REJECT,
	}}); err != nil {
		_ = r.s.StopBgp(context.Background(), &api.StopBgpRequest{})
		return fmt.Errorf("setting the import policy: %w", err)
	}
	return nil
}

func (r *gobgpRouter) Stop(ctx context.Context) error {
	r.mu.Lock()
	clear(r.paths) // StopBgp empties the RIB
	r.mu.Unlock()
	return r.s.StopBgp(ctx, &api.StopBgpRequest{})
}

func family(v6 bool) *api.Family {
	if v6 {
		return &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
	}
	return &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
}

func seconds(d time.Duration) uint64 { return uint64(d / time.Second) }

func (r *gobgpRouter) AddPeer(ctx context.Context, p peerSpec) error {
	peer := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: p.Address.String(),
			PeerAsn:         p.AS,
			AuthPassword:    p.Password,
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry:      seconds(p.ConnectRetry),
			HoldTime:          seconds(p.HoldTime),
			KeepaliveInterval: seconds(p.Keepalive),
			// After a reset GoBGP waits this long before dialling again
			// (30s by default); reconnect as fast as the retry timer.
			IdleHoldTimeAfterReset: seconds(p.ConnectRetry),
		}},
		Transport: &api.Transport{
			RemotePort:    uint32(p.Port),
			BindInterface: p.SourceInterface,
		},
	}
	if p.SourceIP.IsValid() {
		peer.Transport.LocalAddress = p.SourceIP.String()
	}
	if p.MultihopTTL > 0 {
		peer.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: uint32(p.MultihopTTL)}
	}
	if p.GracefulRestart {
		peer.GracefulRestart = &api.GracefulRestart{Enabled: true, RestartTime: uint32(seconds(p.RestartTime))}
	}
	for _, f := range []struct {
		on bool
		v6 bool
	}{{p.IPv4, false}, {p.IPv6, true}} {
		if !f.on {
			continue
		}
		as := &api.AfiSafi{Config: &api.AfiSafiConfig{Family: family(f.v6), Enabled: true}}
		if p.GracefulRestart {
			as.MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
		}
		peer.AfiSafis = append(peer.AfiSafis, as)
	}
	if err := r.s.AddPeer(ctx, &api.AddPeerRequest{Peer: peer}); err != nil {
		return fmt.Errorf("adding peer %s: %w", p.Address, err)
	}
	return nil
}

func (r *gobgpRouter) DeletePeer(ctx context.Context, addr netip.Addr) error {
	if err := r.s.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
		return fmt.Errorf("deleting peer %s: %w", addr, err)
	}
	return nil
}

// apiPath builds the GoBGP form of a path.
func apiPath(p pathSpec) (*api.Path, error) {
	v6 := p.Prefix.Addr().Is6()
	nlri, err := anypb.New(&api.IPAddressPrefix{Prefix: p.Prefix.Addr().String(), PrefixLen: uint32(p.Prefix.Bits())})
	if err != nil {
		return nil, err
	}
	attrs := []proto.Message{&api.OriginAttribute{Origin: 0}} // IGP
	nh := p.NextHop
	if !nh.IsValid() {
		// Unspecified: GoBGP puts the session's local address in.
		nh = netip.IPv4Unspecified()
		if v6 {
			nh = netip.IPv6Unspecified()
		}
	}
	if v6 {
		attrs = append(attrs, &api.MpReachNLRIAttribute{Family: family(true), NextHops: []string{nh.String()}, Nlris: []*anypb.Any{nlri}})
	} else {
		attrs = append(attrs, &api.NextHopAttribute{NextHop: nh.String()})
	}
	if len(p.Communities) > 0 {
		attrs = append(attrs, &api.CommunitiesAttribute{Communities: p.Communities})
	}
	if len(p.LargeCommunities) > 0 {
		lc := make([]*api.LargeCommunity, 0, len(p.LargeCommunities))
		for _, c := range p.LargeCommunities {
			lc = append(lc, &api.LargeCommunity{GlobalAdmin: c.Global, LocalData1: c.Local1, LocalData2: c.Local2})
		}
		attrs = append(attrs, &api.LargeCommunitiesAttribute{Communities: lc})
	}
	if p.LocalPref > 0 {
		attrs = append(attrs, &api.LocalPrefAttribute{LocalPref: p.LocalPref})
	}
	pattrs := make([]*anypb.Any, 0, len(attrs))
	for _, a := range attrs {
		x, err := anypb.New(a)
		if err != nil {
			return nil, err
		}
		pattrs = append(pattrs, x)
	}
	return &api.Path{Family: family(v6), Nlri: nlri, Pattrs: pattrs}, nil
}

func (r *gobgpRouter) AddPath(ctx context.Context, p pathSpec) ([]byte, error) {
	path, err := apiPath(p)
	if err != nil {
		return nil, fmt.Errorf("building path %s: %w", p.Prefix, err)
	}
	res, err := r.s.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: path})
	if err != nil {
		return nil, fmt.Errorf("adding path %s: %w", p.Prefix, err)
	}
	r.mu.Lock()
	r.paths[string(res.Uuid)] = path
	r.mu.Unlock()
	return res.Uuid, nil
}

// DeletePath withdraws the path added with uuid, by the path itself when
// this router added it (see paths), else by UUID.
func (r *gobgpRouter) DeletePath(ctx context.Context, uuid []byte) error {
	r.mu.Lock()
	path, ok := r.paths[string(uuid)]
	r.mu.Unlock()
	req := &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Uuid: uuid}
	if ok {
		req = &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Family: path.Family, Path: path}
	}
	if err := r.s.DeletePath(ctx, req); err != nil {
		return err
	}
	r.mu.Lock()
	delete(r.paths, string(uuid))
	r.mu.Unlock()
	return nil
}

func (r *gobgpRouter) DeleteAllPaths(ctx context.Context) error {
	if err := r.s.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL}); err != nil {
		return err
	}
	r.mu.Lock()
	clear(r.paths)
	r.mu.Unlock()
	return nil
}

func (r *gobgpRouter) WatchPeers(ctx context.Context, fn func(peerEvent)) error {
	return r.s.WatchEvent(ctx, &api.WatchEventRequest{Peer: &api.WatchEventRequest_Peer{}}, func(res *api.WatchEventResponse) {
		ev := res.GetPeer()
		if ev == nil || ev.Type != api.WatchEventResponse_PeerEvent_STATE || ev.Peer == nil || ev.Peer.State == nil {
			return
		}
		addr, err := netip.ParseAddr(ev.Peer.State.NeighborAddress)
		if err != nil {
			return
		}
		out := peerEvent{Peer: addr.Unmap(), State: strings.ToLower(ev.Peer.State.SessionState.String())}
		if ev.Peer.Transport != nil {
			if l, err := netip.ParseAddr(ev.Peer.Transport.LocalAddress); err == nil {
				out.Local = l.Unmap()
			}
		}
		fn(out)
	})
}

// gobgpLogger sends GoBGP's logs to logr: errors as errors, warnings at
// level 0, informational messages (session chatter) at level 2 and debug at
// level 4.
type gobgpLogger struct {
	log logr.Logger
}

func kv(f gobgplog.Fields) []any {
	out := make([]any, 0, 2*len(f))
	for k, v := range f {
		out = append(out, strings.ToLower(k), v)
	}
	return out
}

func (l *gobgpLogger) Panic(msg string, f gobgplog.Fields) {
	l.log.Error(nil, "gobgp: "+msg, kv(f)...)
	panic(msg)
}

// Fatal ends the process: GoBGP calls it only where it cannot go on.
func (l *gobgpLogger) Fatal(msg string, f gobgplog.Fields) {
	l.log.Error(nil, "gobgp: "+msg, kv(f)...)
	os.Exit(1)
}
func (l *gobgpLogger) Error(msg string, f gobgplog.Fields) { l.log.Error(nil, "gobgp: "+msg, kv(f)...) }
func (l *gobgpLogger) Warn(msg string, f gobgplog.Fields)  { l.log.Info("gobgp: "+msg, kv(f)...) }
func (l *gobgpLogger) Info(msg string, f gobgplog.Fields)  { l.log.V(2).Info("gobgp: "+msg, kv(f)...) }
func (l *gobgpLogger) Debug(msg string, f gobgplog.Fields) { l.log.V(4).Info("gobgp: "+msg, kv(f)...) }
func (l *gobgpLogger) SetLevel(gobgplog.LogLevel)          {}
func (l *gobgpLogger) GetLevel() gobgplog.LogLevel {
	switch {
	case l.log.V(4).Enabled():
		return gobgplog.DebugLevel
	case l.log.V(2).Enabled():
		return gobgplog.InfoLevel
	}
	return gobgplog.WarnLevel
}
