package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"sort"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"

	"github.com/vip-lb/vip/pkg/announce"
	"github.com/vip-lb/vip/pkg/announce/addr"
	"github.com/vip-lb/vip/pkg/bgpconfig"
)

// DefaultInterface is where addresses are bound when neither Options nor
// the caller name an interface.
const DefaultInterface = "lo"

// ErrNoPeerForFamily means no session carries routes of the address's
// family (an IPv6 address with only IPv4 peers and no IPv6 next hop, say).
var ErrNoPeerForFamily = errors.New("no BGP peer carries this address family")

// Options configure a Speaker.
type Options struct {
	// Config is the BGP configuration; it is normalized and validated.
	Config bgpconfig.Config
	// Interface is where addresses are bound when Announce is given none;
	// empty means DefaultInterface. A dummy interface works as well as lo.
	Interface string
	// Handle is the netlink handle for addresses; nil makes one in the
	// caller's network namespace (see addr.Options.Handle).
	Handle *netlink.Handle
	// StatePath records bound addresses for crash recovery; empty means
	// addr.DefaultStatePath.
	StatePath string
	// Logger receives structured logs; the zero value discards them.
	Logger logr.Logger
	// Registerer receives the metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// OnSessionChange, when set, is called (outside any lock) when a session
	// becomes established or stops being so, with the new state. It is not
	// called for the sessions Close and Reconfigure end on purpose.
	OnSessionChange func(peer netip.Addr, up bool, state string)
}

// binder is what Speaker needs from *addr.Manager.
type binder interface {
	Add(owner string, vip netip.Addr, iface string) (bool, error)
	Remove(owner string, vip netip.Addr) (bool, error)
	Held() []netip.Addr
	Cleanup(ctx context.Context) error
	RemoveAll(ctx context.Context) error
	Close() error
}

// vipEntry is one advertised address.
type vipEntry struct {
	owners map[string]struct{}
	uuid   []byte // nil until the path is added
}

// Speaker advertises virtual IPs to BGP peers from an embedded GoBGP speaker
// and binds them to a local interface. It is safe for concurrent use and
// implements announce.Announcer.
type Speaker struct {
	r        router
	addrs    binder
	m        *metrics
	log      logr.Logger
	iface    string
	onChange func(peer netip.Addr, up bool, state string)
	stopWait context.CancelFunc

	mu     sync.Mutex
	cfg    bgpconfig.Config
	peers  map[netip.Addr]peerSpec
	vips   map[netip.Addr]*vipEntry
	closed bool

	stMu     sync.Mutex
	state    map[netip.Addr]string // last known session state per configured peer
	quiet    bool                  // Close or Reconfigure is ending sessions on purpose
	quietFor map[netip.Addr]bool
}

var _ announce.Announcer = (*Speaker)(nil)

// New starts a Speaker: the BGP instance (dialling out only unless a listen
// port is configured) and a session to every peer. Call Cleanup before the
// first Announce to remove what a crashed predecessor left behind.
func New(ctx context.Context, opts Options) (*Speaker, error) {
	addrs, err := addr.New(addr.Options{Handle: opts.Handle, StatePath: opts.StatePath, Logger: opts.Logger})
	if err != nil {
		return nil, err
	}
	s, err := newSpeaker(ctx, opts, newGoBGP(opts.Logger.WithName("gobgp")), addrs)
	if err != nil {
		_ = addrs.Close()
		return nil, err
	}
	return s, nil
}

// newSpeaker wires a Speaker around r and addrs; tests pass fakes.
func newSpeaker(ctx context.Context, opts Options, r router, addrs binder) (*Speaker, error) {
	cfg := opts.Config.Normalize()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	iface := opts.Interface
	if iface == "" {
		iface = DefaultInterface
	}
	s := &Speaker{
		r: r, addrs: addrs, m: m, log: opts.Logger, iface: iface, onChange: opts.OnSessionChange,
		cfg: cfg, peers: map[netip.Addr]peerSpec{}, vips: map[netip.Addr]*vipEntry{},
		state: map[netip.Addr]string{}, quietFor: map[netip.Addr]bool{},
	}
	wctx, cancel := context.WithCancel(context.Background())
	s.stopWait = cancel
	if err := r.WatchPeers(wctx, s.onPeerEvent); err != nil {
		cancel()
		return nil, fmt.Errorf("watching BGP sessions: %w", err)
	}
	if err := r.Start(ctx, globalOf(cfg)); err != nil {
		cancel()
		return nil, err
	}
	if err := s.syncPeersLocked(ctx, peerSpecs(cfg)); err != nil {
		_ = r.Stop(context.Background())
		cancel()
		return nil, err
	}
	s.log.Info("BGP speaker started", "as", cfg.AS, "routerID", cfg.RouterID, "peers", len(cfg.Peers),
		"listenPort", cfg.ListenPort, "iface", iface)
	return s, nil
}

func globalOf(c bgpconfig.Config) globalSpec {
	return globalSpec{AS: c.AS, RouterID: c.RouterID, ListenPort: c.ListenPort}
}

// pathFor is the route of vip under the current configuration.
func (s *Speaker) pathFor(vip netip.Addr) pathSpec {
	p := pathSpec{
		Prefix:           netip.PrefixFrom(vip, vip.BitLen()),
		Communities:      s.cfg.Communities,
		LargeCommunities: s.cfg.LargeCommunities,
		LocalPref:        s.cfg.LocalPref,
		NextHop:          s.cfg.NextHop4,
	}
	if vip.Is6() {
		p.NextHop = s.cfg.NextHop6
	}
	return p
}

// carries reports whether some session carries vip's family.
func (s *Speaker) carries(vip netip.Addr) bool {
	for _, p := range s.peers {
		if (vip.Is4() && p.IPv4) || (vip.Is6() && p.IPv6) {
			return true
		}
	}
	return false
}

// Announce binds vip for owner (on iface, or on the speaker's interface
// when iface is empty) and advertises its host route to every peer of its
// family. The route is added once per address, whatever the number of
// owners.
func (s *Speaker) Announce(ctx context.Context, owner string, vip netip.Addr, iface string) error {
	vip = vip.Unmap().WithZone("")
	if err := ctx.Err(); err != nil {
		return err
	}
	if iface == "" {
		iface = s.iface
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return announce.ErrClosed
	}
	if err := addr.Valid(vip); err != nil {
		s.m.fail(OpAnnounce)
		return fmt.Errorf("announcing %s: %w", vip, err)
	}
	if !s.carries(vip) {
		s.m.fail(OpAnnounce)
		return fmt.Errorf("announcing %s: %w (add a peer of that family, or set the next hop of that family for MP-BGP)", vip, ErrNoPeerForFamily)
	}
	e := s.vips[vip]
	_, had := e.owner(owner)
	if _, err := s.addrs.Add(owner, vip, iface); err != nil {
		s.m.fail(OpAnnounce)
		return fmt.Errorf("announcing %s: %w", vip, err)
	}
	if e == nil {
		e = &vipEntry{owners: map[string]struct{}{}}
		s.vips[vip] = e
	}
	e.owners[owner] = struct{}{}
	if e.uuid != nil {
		return nil
	}
	uuid, err := s.r.AddPath(ctx, s.pathFor(vip))
	if err != nil {
		s.m.fail(OpAnnounce)
		if !had {
			delete(e.owners, owner)
			if _, rerr := s.addrs.Remove(owner, vip); rerr != nil {
				s.log.Error(rerr, "unbinding after a failed announcement", "vip", vip)
			}
		}
		if len(e.owners) == 0 {
			delete(s.vips, vip)
		}
		return fmt.Errorf("announcing %s: %w", vip, err)
	}
	e.uuid = uuid
	s.m.paths.Set(float64(s.advertisedLocked()))
	s.log.V(1).Info("advertised", "vip", vip, "iface", iface, "owner", owner)
	return nil
}

func (e *vipEntry) owner(o string) (struct{}, bool) {
	if e == nil {
		return struct{}{}, false
	}
	v, ok := e.owners[o]
	return v, ok
}

func (s *Speaker) advertisedLocked() int {
	n := 0
	for _, e := range s.vips {
		if e.uuid != nil {
			n++
		}
	}
	return n
}

// Withdraw drops owner from vip; after the last owner it withdraws the
// route and then unbinds the address. Withdrawing what is not held, or
// anything after Close (which withdrew everything), is a no-op.
func (s *Speaker) Withdraw(ctx context.Context, owner string, vip netip.Addr) error {
	vip = vip.Unmap().WithZone("")
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	e := s.vips[vip]
	if _, ok := e.owner(owner); !ok {
		return nil
	}
	if len(e.owners) == 1 && e.uuid != nil {
		if err := s.r.DeletePath(ctx, e.uuid); err != nil {
			s.m.fail(OpWithdraw)
			return fmt.Errorf("withdrawing %s: %w", vip, err)
		}
		e.uuid = nil
		s.m.paths.Set(float64(s.advertisedLocked()))
	}
	if _, err := s.addrs.Remove(owner, vip); err != nil {
		s.m.fail(OpWithdraw)
		return fmt.Errorf("withdrawing %s: %w", vip, err)
	}
	delete(e.owners, owner)
	if len(e.owners) == 0 {
		delete(s.vips, vip)
		s.log.V(1).Info("withdrew", "vip", vip, "owner", owner)
	}
	return nil
}

// Held returns the addresses bound by this Speaker, sorted.
func (s *Speaker) Held() []netip.Addr { return s.addrs.Held() }

// Advertised returns the addresses whose route is advertised, sorted.
func (s *Speaker) Advertised() []netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]netip.Addr, 0, len(s.vips))
	for a, e := range s.vips {
		if e.uuid != nil {
			out = append(out, a)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}

// Cleanup removes the addresses a previous run left behind (see
// addr.Manager.Cleanup).
func (s *Speaker) Cleanup(ctx context.Context) error {
	if err := s.addrs.Cleanup(ctx); err != nil {
		return fmt.Errorf("cleaning up: %w", err)
	}
	return nil
}

// Reconfigure applies a new configuration: sessions whose settings changed
// are restarted, removed peers are dropped, new ones added, and the routes
// are re-advertised with the new attributes. A new AS, router ID or listen
// port restarts the whole BGP instance.
func (s *Speaker) Reconfigure(ctx context.Context, c bgpconfig.Config) error {
	c = c.Normalize()
	if err := c.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return announce.ErrClosed
	}
	old := s.cfg
	if reflect.DeepEqual(old, c) {
		return nil
	}
	s.cfg = c
	restart := globalOf(old) != globalOf(c)
	if restart {
		s.log.Info("BGP identity changed; restarting the speaker", "as", c.AS, "routerID", c.RouterID, "listenPort", c.ListenPort)
		s.setQuiet(true)
		err := s.r.Stop(ctx)
		for a := range s.peers {
			delete(s.peers, a)
			s.forgetPeer(a)
		}
		s.setQuiet(false)
		if err == nil {
			err = s.r.Start(ctx, globalOf(c))
		}
		if err != nil {
			s.m.fail(OpReconfigure)
			return fmt.Errorf("restarting BGP: %w", err)
		}
	}
	if err := s.syncPeersLocked(ctx, peerSpecs(c)); err != nil {
		s.m.fail(OpReconfigure)
		return err
	}
	attrsChanged := !reflect.DeepEqual(old.Communities, c.Communities) || !reflect.DeepEqual(old.LargeCommunities, c.LargeCommunities) ||
		old.LocalPref != c.LocalPref || old.NextHop4 != c.NextHop4 || old.NextHop6 != c.NextHop6
	if !restart && !attrsChanged {
		return nil
	}
	var errs []error
	for vip, e := range s.vips {
		if !s.carries(vip) {
			if e.uuid != nil && !restart {
				if err := s.r.DeletePath(ctx, e.uuid); err != nil {
					errs = append(errs, err)
				}
			}
			e.uuid = nil
			continue
		}
		uuid, err := s.r.AddPath(ctx, s.pathFor(vip))
		if err != nil {
			errs = append(errs, err)
			e.uuid = nil
			continue
		}
		e.uuid = uuid
	}
	s.m.paths.Set(float64(s.advertisedLocked()))
	if err := errors.Join(errs...); err != nil {
		s.m.fail(OpReconfigure)
		return fmt.Errorf("re-advertising: %w", err)
	}
	return nil
}

// closeTimeout bounds Close.
const closeTimeout = 10 * time.Second

// Close ends every session with a NOTIFICATION, so peers drop this node's
// routes at once, unbinds every address this Speaker bound and stops the
// watch. With graceful restart the peers would keep the routes of a closed
// session as stale, so every route is withdrawn first; without it the
// NOTIFICATION alone removes them all, and sending it at once gets the
// routes out of the peers' tables sooner. Later calls return nil.
func (s *Speaker) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	n := len(s.vips)
	s.vips = map[netip.Addr]*vipEntry{}
	withdrawFirst := s.cfg.GracefulRestart
	s.mu.Unlock()
	s.setQuiet(true)

	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	t0 := time.Now()
	var errs []error
	if withdrawFirst {
		if err := s.r.DeleteAllPaths(ctx); err != nil {
			errs = append(errs, fmt.Errorf("withdrawing all routes: %w", err))
		}
	}
	if err := s.r.Stop(ctx); err != nil {
		errs = append(errs, fmt.Errorf("stopping BGP: %w", err))
	}
	s.m.paths.Set(0)
	s.m.up.Reset()
	withdrawn := time.Since(t0)
	errs = append(errs, s.addrs.RemoveAll(ctx), s.addrs.Close())
	s.stopWait()
	s.log.Info("BGP speaker stopped", "routes", n, "withdrawnFirst", withdrawFirst, "withdrawIn", withdrawn.String(), "total", time.Since(t0).String())
	if err := errors.Join(errs...); err != nil {
		s.m.fail(OpClose)
		return fmt.Errorf("closing: %w", err)
	}
	return nil
}
