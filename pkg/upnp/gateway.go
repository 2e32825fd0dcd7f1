package upnp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/huin/goupnp"
	"github.com/huin/goupnp/dcps/internetgateway2"
	"github.com/huin/goupnp/httpu"
	"github.com/huin/goupnp/soap"
	"github.com/huin/goupnp/ssdp"
)

// Sentinel errors, checked with errors.Is.
var (
	// ErrNoGateway means discovery found no usable Internet gateway.
	ErrNoGateway = errors.New("no UPnP Internet gateway found")
	// ErrUnreachable means the gateway did not answer (it is rediscovered).
	ErrUnreachable = errors.New("UPnP gateway unreachable")
	// ErrRefused means the gateway answered the request with a fault.
	ErrRefused = errors.New("UPnP gateway refused the request")
	// ErrPermanentOnly means the gateway accepts only permanent mappings
	// (UPnP error 725, OnlyPermanentLeasesSupported).
	ErrPermanentOnly = errors.New("gateway accepts only permanent mappings")
	// ErrConflict means another host holds the external port (UPnP 718).
	ErrConflict = errors.New("external port mapped to another host")
	// ErrNoSuchEntry means the mapping does not exist (UPnP 714).
	ErrNoSuchEntry = errors.New("no such port mapping")
)

// Gateway is what the Mapper needs from an Internet gateway.
type Gateway interface {
	// AddPortMapping maps m.Port/m.Protocol to m.VIP on the same port for
	// lease (0 = permanent).
	AddPortMapping(ctx context.Context, m Mapping, lease time.Duration, description string) error
	// DeletePortMapping removes the mapping m (found by its ID).
	DeletePortMapping(ctx context.Context, m Mapping) error
	// ExternalAddress is the gateway's address on the outside.
	ExternalAddress(ctx context.Context) (netip.Addr, error)
	// String names the gateway (service type and location) for messages.
	String() string
}

// Discoverer finds the gateway.
type Discoverer func(ctx context.Context) (Gateway, error)

// connection is the part of goupnp's WANIPConnection1/2 and
// WANPPPConnection1 clients vip uses; all three have these methods.
type connection interface {
	AddPortMappingCtx(ctx context.Context, remoteHost string, externalPort uint16, protocol string,
		internalPort uint16, internalClient string, enabled bool, description string, leaseSeconds uint32) error
	DeletePortMappingCtx(ctx context.Context, remoteHost string, externalPort uint16, protocol string) error
	GetExternalIPAddressCtx(ctx context.Context) (string, error)
}

type igd struct {
	conn connection
	name string
	// soap is the connection's SOAP client; its HTTP client is swapped per
	// call (the Mapper makes one call at a time) so that an addition comes
	// from the mapped address itself.
	soap    *soap.SOAPClient
	timeout time.Duration
	plain   http.Client
	fromVIP map[netip.Addr]http.Client
}

// from returns the HTTP client whose connections start at vip, so that a
// gateway in "secure mode" (internal client must be the requester) accepts
// the mapping; the plain client when vip is not an address of this host.
func (g *igd) from(vip netip.Addr) http.Client {
	if c, ok := g.fromVIP[vip]; ok {
		return c
	}
	if !local(vip) {
		return g.plain // not cached: the address may be bound later
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: vip.AsSlice()}, Timeout: g.timeout}
	c := http.Client{Timeout: g.timeout, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
	if g.fromVIP == nil {
		g.fromVIP = map[netip.Addr]http.Client{}
	}
	g.fromVIP[vip] = c
	return c
}

// local reports whether a is an address of this host.
func local(a netip.Addr) bool {
	as, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, x := range as {
		if p, err := netip.ParsePrefix(x.String()); err == nil && p.Addr().Unmap() == a {
			return true
		}
	}
	return false
}

func (g *igd) use(c http.Client) {
	if g.soap != nil {
		g.soap.HTTPClient = c
	}
}

func (g *igd) String() string { return g.name }

func (g *igd) AddPortMapping(ctx context.Context, m Mapping, lease time.Duration, desc string) error {
	secs := uint32(0)
	if lease > 0 {
		secs = uint32(max(1, min(lease/time.Second, 604800))) // IGDv2 caps leases at one week
	}
	g.use(g.from(m.VIP))
	defer g.use(g.plain)
	err := g.conn.AddPortMappingCtx(ctx, "", m.Port, m.Protocol, m.Port, m.VIP.String(), true, desc, secs)
	return classify(err)
}

func (g *igd) DeletePortMapping(ctx context.Context, m Mapping) error {
	g.use(g.from(m.VIP))
	defer g.use(g.plain)
	return classify(g.conn.DeletePortMappingCtx(ctx, "", m.Port, m.Protocol))
}

func (g *igd) ExternalAddress(ctx context.Context) (netip.Addr, error) {
	s, err := g.conn.GetExternalIPAddressCtx(ctx)
	if err != nil {
		return netip.Addr{}, classify(err)
	}
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%w: external address %q: %v", ErrRefused, s, err)
	}
	return a.Unmap(), nil
}

// classify maps goupnp errors onto the sentinels: SOAP faults by UPnP error
// code, anything else (connection refused, timeouts) is ErrUnreachable.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var f *soap.SOAPFaultError
	if !errors.As(err, &f) {
		return fmt.Errorf("%w: %v", ErrUnreachable, err)
	}
	code, desc := f.Detail.UPnPError.Errorcode, strings.TrimSpace(f.Detail.UPnPError.ErrorDescription)
	var s error
	switch code {
	case 725:
		s = ErrPermanentOnly
	case 718:
		s = ErrConflict
	case 714:
		s = ErrNoSuchEntry
	default:
		s = ErrRefused
	}
	if desc == "" {
		desc = f.FaultString
	}
	return fmt.Errorf("%w (UPnP error %d %s)", s, code, desc)
}

// SSDPOptions configure discovery.
type SSDPOptions struct {
	// Interface is where to search ("" = every up, multicast-capable
	// interface). The search is sent from each of its IPv4 addresses that
	// is not a /32 (virtual IPs are).
	Interface string
	// Window is how long to collect answers (default 2 s, at least 1 s:
	// SSDP's MX header counts whole seconds).
	Window time.Duration
	// HTTPTimeout bounds each SOAP call (default 10 s).
	HTTPTimeout time.Duration
}

// SSDP discovers the gateway by an SSDP search for root devices and takes
// the first one offering WANIPConnection:2, then WANIPConnection:1, then
// WANPPPConnection:1.
func SSDP(o SSDPOptions) Discoverer {
	if o.Window <= 0 {
		o.Window = 2 * time.Second
	}
	o.Window = max(o.Window, time.Second)
	if o.HTTPTimeout <= 0 {
		o.HTTPTimeout = 10 * time.Second
	}
	return func(ctx context.Context) (Gateway, error) {
		prefixes, err := searchPrefixes(o.Interface)
		if err != nil {
			return nil, err
		}
		var clients []httpu.ClientInterfaceCtx
		for _, p := range prefixes {
			c, err := httpu.NewHTTPUClientAddr(p.Addr().String())
			if err != nil {
				return nil, fmt.Errorf("SSDP socket on %s: %w", p.Addr(), err)
			}
			defer c.Close()
			clients = append(clients, c)
		}
		// A little past the window, so the MX computed from the deadline is
		// still the window's whole seconds.
		sctx, cancel := context.WithTimeout(ctx, o.Window+250*time.Millisecond)
		defer cancel()
		resps, err := ssdp.RawSearch(sctx, httpu.NewMultiClientCtx(clients), ssdp.UPNPRootDevice, 2)
		if err != nil {
			return nil, fmt.Errorf("SSDP search: %w", err)
		}
		var errs []error
		seen := map[string]bool{}
		offLink := 0
		for _, r := range resps {
			loc, err := r.Location()
			if err != nil || seen[loc.String()] {
				continue
			}
			seen[loc.String()] = true
			// Only a gateway on the searched interface's own subnets is
			// used: an answer naming any other host (another network, the
			// management side, a name) is ignored.
			if !onLink(prefixes, loc) {
				offLink++
				continue
			}
			g, err := fromLocation(ctx, loc, o.HTTPTimeout)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if ig, ok := g.(*igd); ok && ig.soap != nil && ig.soap.EndpointURL.Host != "" && !onLink(prefixes, &ig.soap.EndpointURL) {
				offLink++
				continue // its control URL points off the link
			}
			return g, nil
		}
		if offLink > 0 {
			errs = append(errs, fmt.Errorf("%d answers named a host outside the searched interface's subnets and were ignored", offLink))
		}
		where := "on every interface"
		if o.Interface != "" {
			where = "on " + o.Interface
		}
		if len(errs) > 0 {
			return nil, fmt.Errorf("%w %s: %w", ErrNoGateway, where, errors.Join(errs...))
		}
		return nil, fmt.Errorf("%w %s (%d SSDP answers in %v)", ErrNoGateway, where, len(resps), o.Window)
	}
}

// fromLocation reads a device description and returns its WAN connection
// service, preferring IGDv2.
func fromLocation(ctx context.Context, loc *url.URL, timeout time.Duration) (Gateway, error) {
	root, err := goupnp.DeviceByURLCtx(ctx, loc)
	if err != nil {
		return nil, fmt.Errorf("device description %s: %w", loc, err)
	}
	mk := func(c connection, sc *goupnp.ServiceClient, kind string) *igd {
		g := &igd{conn: c, name: kind + " at " + loc.String(), soap: sc.SOAPClient, timeout: timeout,
			plain: http.Client{Timeout: timeout}}
		g.use(g.plain)
		return g
	}
	if v2, err := internetgateway2.NewWANIPConnection2ClientsFromRootDevice(root, loc); err == nil && len(v2) > 0 {
		return mk(v2[0], &v2[0].ServiceClient, "WANIPConnection:2"), nil
	}
	if v1, err := internetgateway2.NewWANIPConnection1ClientsFromRootDevice(root, loc); err == nil && len(v1) > 0 {
		return mk(v1[0], &v1[0].ServiceClient, "WANIPConnection:1"), nil
	}
	if p, err := internetgateway2.NewWANPPPConnection1ClientsFromRootDevice(root, loc); err == nil && len(p) > 0 {
		return mk(p[0], &p[0].ServiceClient, "WANPPPConnection:1"), nil
	}
	return nil, fmt.Errorf("%s (%s) offers no WANIPConnection or WANPPPConnection service", loc, root.Device.DeviceType)
}

// onLink reports whether u names, by address, a host inside one of
// prefixes (the subnets of the searched interface).
func onLink(prefixes []netip.Prefix, u *url.URL) bool {
	a, err := netip.ParseAddr(u.Hostname())
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range prefixes {
		if p.Masked().Contains(a) && a != p.Addr() {
			return true
		}
	}
	return false
}

// searchPrefixes are the IPv4 addresses to send the search from, with
// their subnets (the only place a gateway's answer is accepted from).
func searchPrefixes(iface string) ([]netip.Prefix, error) {
	var ifis []net.Interface
	if iface != "" {
		ifi, err := net.InterfaceByName(iface)
		if err != nil {
			return nil, fmt.Errorf("%w: interface %q: %v", ErrNoGateway, iface, err)
		}
		ifis = []net.Interface{*ifi}
	} else {
		all, err := net.Interfaces()
		if err != nil {
			return nil, fmt.Errorf("listing interfaces: %w", err)
		}
		for _, ifi := range all {
			if ifi.Flags&net.FlagUp != 0 && ifi.Flags&net.FlagMulticast != 0 && ifi.Flags&net.FlagLoopback == 0 {
				ifis = append(ifis, ifi)
			}
		}
	}
	var out []netip.Prefix
	for _, ifi := range ifis {
		as, err := ifi.Addrs()
		if err != nil {
			return nil, fmt.Errorf("addresses of %s: %w", ifi.Name, err)
		}
		for _, a := range as {
			p, err := netip.ParsePrefix(a.String())
			if err != nil || !p.Addr().Is4() || p.Bits() == 32 {
				continue
			}
			out = append(out, netip.PrefixFrom(p.Addr().Unmap(), p.Bits()))
		}
	}
	if len(out) == 0 {
		where := "any interface"
		if iface != "" {
			where = iface
		}
		return nil, fmt.Errorf("%w: no IPv4 address on %s to search from", ErrNoGateway, where)
	}
	return out, nil
}
