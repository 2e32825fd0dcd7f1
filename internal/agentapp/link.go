package agentapp

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"

	"github.com/go-logr/logr"

	"github.com/vip-lb/vip/pkg/agentconfig"
	"github.com/vip-lb/vip/pkg/election"
	"github.com/vip-lb/vip/pkg/liveness"
)

// linkLiveness is a link monitor (--liveness=link) and its Elector.
type linkLiveness struct {
	mon   *liveness.Monitor
	addr  string
	iface string // the interface addr is on ("" = not known)
	el    atomic.Pointer[election.Elector]
}

// startLink opens the heartbeat socket for --liveness=link (nil for lease).
func startLink(c agentconfig.Config, log logr.Logger) (*linkLiveness, error) {
	lc := c.Liveness
	if lc.Mode != agentconfig.LivenessLink {
		return nil, nil
	}
	key, err := os.ReadFile(lc.KeyFile)
	if err != nil {
		return nil, configErr(fmt.Errorf("--link-key-file: %w", err))
	}
	key = bytes.TrimSpace(key)
	addr, err := linkAddress(c)
	if err != nil {
		return nil, err
	}
	ap := netip.AddrPortFrom(addr, uint16(lc.Port))
	udp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return nil, fmt.Errorf("listening for link heartbeats: %w", err)
	}
	l := &linkLiveness{addr: ap.String(), iface: linkInterface(c)}
	fresh, changed := election.LinkHooks(&l.el)
	l.mon, err = liveness.New(liveness.Options{Self: c.NodeName, Key: key, Conn: udp,
		Interval: lc.Interval, Timeout: lc.Timeout, Logger: log, MemberFresh: fresh, OnChange: changed})
	if err != nil {
		_ = udp.Close()
		return nil, configErr(err)
	}
	return l, nil
}

// options puts link mode into the Elector's options.
func (l *linkLiveness) options(o *election.Options) {
	if l == nil {
		return
	}
	o.Link, o.LinkAddress, o.LinkInterface = l.mon, l.addr, l.iface
	o.HeartbeatPeriod, o.HeartbeatTimeout = 0, 0 // membership: the link-mode defaults
}

// run wires the Elector and sends heartbeats until ctx ends.
func (l *linkLiveness) run(ctx context.Context, el *election.Elector) {
	if l == nil {
		return
	}
	l.el.Store(el)
	go func() { _ = l.mon.Run(ctx) }()
}

// linkInterface names the interface of the link address, for messages
// ("" when it is given as an address).
func linkInterface(c agentconfig.Config) string {
	switch {
	case c.Liveness.Address != "":
		return ""
	case c.ServicesInterface != "":
		return c.ServicesInterface
	}
	return c.Interface
}

// linkAddress is --link-address, or the first address of the announcing
// interface that is not a bound VIP, or without an interface (addresses
// announced on the interface whose subnet covers them) the node's address
// (--node-address, NODE_IP: the Pod's status.hostIP).
func linkAddress(c agentconfig.Config) (netip.Addr, error) {
	if c.Liveness.Address != "" {
		a, err := netip.ParseAddr(c.Liveness.Address)
		if err != nil {
			return a, configErr(fmt.Errorf("--link-address: %w", err))
		}
		return a, nil
	}
	name := c.ServicesInterface
	if name == "" {
		name = c.Interface
	}
	if name == "" {
		if a, err := netip.ParseAddr(c.NodeAddress); err == nil {
			return a, nil
		}
		return netip.Addr{}, configErr(fmt.Errorf("--liveness=link needs --interface, --link-address or --node-address (NODE_IP)"))
	}
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("link heartbeats on %s: %w", name, err)
	}
	addrs, err := ifc.Addrs()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("link heartbeats on %s: %w", name, err)
	}
	var v6 netip.Addr
	for _, a := range addrs {
		p, err := netip.ParsePrefix(a.String())
		if err != nil || !p.Addr().IsGlobalUnicast() || p.Bits() == p.Addr().BitLen() {
			continue // VIPs are bound as host addresses (/32, /128)
		}
		if p.Addr().Is4() {
			return p.Addr(), nil
		}
		if !v6.IsValid() {
			v6 = p.Addr()
		}
	}
	if v6.IsValid() {
		return v6, nil
	}
	return netip.Addr{}, fmt.Errorf("link heartbeats: %s has no address", name)
}
