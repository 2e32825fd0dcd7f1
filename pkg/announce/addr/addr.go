package addr

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"sync"

	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DefaultStatePath is where the addresses added by this node's agent are
// recorded when Options.StatePath is empty.
const DefaultStatePath = "/run/vip-agent/addresses.json"

// LabelSuffix is appended to the interface name to form the IFA label of the
// IPv4 addresses this package adds, when the result fits in 15 characters.
const LabelSuffix = ":vip"

// maxLabel is the longest IFA label the kernel accepts (IFNAMSIZ - 1).
const maxLabel = 15

// Sentinel errors, checked with errors.Is.
var (
	// ErrForeignAddress means the address is already on the interface and was
	// not added by this package; it is left alone and no owner is recorded.
	ErrForeignAddress = errors.New("address already present and not added by vip")
	// ErrInterfaceConflict means the address is already bound here on another
	// interface than the one requested.
	ErrInterfaceConflict = errors.New("address already bound on another interface")
	// ErrInvalidAddress means the address cannot be a virtual IP (unspecified,
	// loopback, multicast, link-local or invalid).
	ErrInvalidAddress = errors.New("not a usable virtual IP")
	// ErrNoInterface means no interface has a connected route for the address.
	ErrNoInterface = errors.New("no interface with a connected route")
	// ErrNoOwner means an owner name is empty.
	ErrNoOwner = errors.New("empty owner")
	// ErrClosed means the Manager was closed.
	ErrClosed = errors.New("address manager closed")
)

// Options configure a Manager. The zero value is usable.
type Options struct {
	// Handle is the netlink handle to work through, for example one made by
	// netlink.NewHandleAt for another network namespace. Nil makes a handle
	// in the network namespace of the calling thread, closed by Close.
	Handle *netlink.Handle
	// StatePath is the file recording added addresses; empty means
	// DefaultStatePath. Its directory is created when needed.
	StatePath string
	// Logger receives structured logs; the zero value discards them.
	Logger logr.Logger
}

// entry is one address this Manager added.
type entry struct {
	iface  string
	index  int
	owners map[string]struct{}
}

// Manager adds and removes virtual IPs on interfaces, reference counted by
// owner. It is safe for concurrent use.
type Manager struct {
	k           kernel
	closeHandle func()
	j           *journal
	log         logr.Logger

	mu           sync.Mutex
	held         map[netip.Addr]*entry
	leftovers    map[netip.Addr]string // recorded by a predecessor: address -> interface
	linksByName  map[string]linkInfo
	linksByIndex map[int]linkInfo
	closed       bool
}

// New returns a Manager. It reads the state file a predecessor may have left,
// so that Cleanup can remove those addresses and Add can take back the ones
// still wanted without removing them first.
func New(opts Options) (*Manager, error) {
	h := opts.Handle
	closeHandle := func() {}
	if h == nil {
		var err error
		if h, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
			return nil, fmt.Errorf("opening netlink handle: %w", err)
		}
		closeHandle = h.Close
	}
	m := newManager(h, opts)
	m.closeHandle = closeHandle
	return m, nil
}

func newManager(k kernel, opts Options) *Manager {
	path := opts.StatePath
	if path == "" {
		path = DefaultStatePath
	}
	m := &Manager{
		k:            k,
		closeHandle:  func() {},
		j:            &journal{path: path},
		log:          opts.Logger,
		held:         map[netip.Addr]*entry{},
		leftovers:    map[netip.Addr]string{},
		linksByName:  map[string]linkInfo{},
		linksByIndex: map[int]linkInfo{},
	}
	live, lines, bad, err := readJournal(path)
	if err != nil {
		m.log.Error(err, "ignoring unreadable state file; IPv4 leftovers are still found by label", "path", path)
	}
	if bad > 0 {
		m.log.Info("skipped unreadable records in state file", "path", path, "count", bad)
	}
	m.leftovers = live
	m.j.lines = lines
	if len(live) > 0 {
		m.log.Info("found addresses recorded by a previous run", "path", path, "count", len(live))
	}
	return m
}

// Valid reports whether vip can be bound as a virtual IP, with ErrInvalidAddress.
func Valid(vip netip.Addr) error {
	vip = normalize(vip)
	switch {
	case !vip.IsValid(), vip.IsUnspecified(), vip.IsLoopback(), vip.IsMulticast(),
		vip.IsLinkLocalUnicast(), vip.IsInterfaceLocalMulticast(), vip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return fmt.Errorf("%s: %w", vip, ErrInvalidAddress)
	}
	return nil
}

// normalize strips zones and IPv4-mapped forms.
func normalize(vip netip.Addr) netip.Addr { return vip.Unmap().WithZone("") }

// hostPrefix returns vip as a /32 or /128 network.
func hostPrefix(vip netip.Addr) *net.IPNet {
	return &net.IPNet{IP: vip.AsSlice(), Mask: net.CIDRMask(vip.BitLen(), vip.BitLen())}
}

// label returns the IFA label for an IPv4 address on iface, or "".
func label(vip netip.Addr, iface string) string {
	l := iface + LabelSuffix
	if !vip.Is4() || len(l) > maxLabel {
		return ""
	}
	return l
}

// Add binds vip to iface for owner; an empty iface means the interface
// InterfaceFor would return (found with the same route lookup). added is
// true when this call made the address one of this Manager's (it was bound
// now, or a predecessor's binding was taken back); it is false when the
// address was already held and only the owner was recorded. Adding the same
// owner twice is a no-op. When the address is on the interface but was not
// put there by vip, Add returns ErrForeignAddress and records nothing.
func (m *Manager) Add(owner string, vip netip.Addr, iface string) (added bool, err error) {
	vip = normalize(vip)
	if owner == "" {
		return false, ErrNoOwner
	}
	if err := Valid(vip); err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false, ErrClosed
	}
	if e, ok := m.held[vip]; ok {
		if iface != "" && e.iface != iface {
			return false, fmt.Errorf("binding %s on %q, held on %q: %w", vip, iface, e.iface, ErrInterfaceConflict)
		}
		e.owners[owner] = struct{}{}
		return false, nil
	}
	r, err := m.route(vip)
	if err != nil {
		return false, fmt.Errorf("binding %s: %w", vip, err)
	}
	if iface == "" {
		if iface, err = m.interfaceFrom(vip, r); err != nil {
			return false, fmt.Errorf("binding %s: %w", vip, err)
		}
	}
	link, err := m.linkByName(iface)
	if err != nil {
		return false, fmt.Errorf("binding %s: looking up %q: %w", vip, iface, err)
	}
	e := &entry{iface: iface, index: link.index, owners: map[string]struct{}{owner: {}}}
	if r.local {
		adopt, err := m.present(vip, link)
		if err != nil {
			return false, err
		}
		if adopt {
			if err := m.recordAdd(vip, iface); err != nil {
				return false, fmt.Errorf("binding %s: %w", vip, err)
			}
			m.held[vip] = e
			delete(m.leftovers, vip)
			m.log.Info("took back address added by a previous run", "vip", vip, "iface", iface)
			return true, nil
		}
	}

	// Record first: a crash after the kernel call must leave a trace.
	if err := m.recordAdd(vip, iface); err != nil {
		return false, fmt.Errorf("binding %s: %w", vip, err)
	}
	if err := m.k.AddrAdd(link.netlinkLink(), m.netlinkAddr(vip, iface)); err != nil {
		m.recordDel(vip)
		m.forgetLinks()
		if errors.Is(err, unix.EEXIST) {
			return false, fmt.Errorf("binding %s on %q: %w", vip, iface, ErrForeignAddress)
		}
		return false, fmt.Errorf("binding %s on %q: %w", vip, iface, err)
	}
	m.held[vip] = e
	delete(m.leftovers, vip)
	m.log.V(1).Info("bound address", "vip", vip, "iface", iface)
	return true, nil
}

// present is asked when vip is local somewhere. It reports whether vip is on
// link as an address a predecessor of this Manager added (adopt), and fails
// with ErrForeignAddress when it is on link for another reason. An address
// that is local only because of another interface (kube-ipvs0, say) is
// neither: it is bound on link too.
func (m *Manager) present(vip netip.Addr, link linkInfo) (adopt bool, err error) {
	addrs, err := m.k.AddrList(link.netlinkLink(), family(vip))
	if err != nil {
		return false, fmt.Errorf("binding %s: listing addresses of %q: %w", vip, link.name, err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || normalize(ip) != vip {
			continue
		}
		ones, bits := a.Mask.Size()
		host := ones == bits
		if host && (m.leftovers[vip] == link.name || (a.Label != "" && a.Label == label(vip, link.name))) {
			return true, nil
		}
		return false, fmt.Errorf("binding %s on %q (present as /%d): %w", vip, link.name, ones, ErrForeignAddress)
	}
	return false, nil
}

// netlinkAddr is the address as this package adds it: a host prefix, IPv4
// with the vip label, IPv6 without DAD or prefix route and deprecated
// (preferred lifetime 0) so the node never picks it as a source address.
func (m *Manager) netlinkAddr(vip netip.Addr, iface string) *netlink.Addr {
	a := &netlink.Addr{IPNet: hostPrefix(vip)}
	if vip.Is4() {
		a.Label = label(vip, iface)
		return a
	}
	a.Flags = unix.IFA_F_NODAD | unix.IFA_F_NOPREFIXROUTE
	a.ValidLft = infinite
	a.PreferedLft = 0
	return a
}

// infinite is the kernel's "forever" lifetime.
const infinite = 0xffffffff

func family(vip netip.Addr) int {
	if vip.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// Remove drops owner from vip. removed is true when owner was the last one
// and the address was taken off its interface. Removing an unknown owner or
// an address this Manager did not add is a no-op.
func (m *Manager) Remove(owner string, vip netip.Addr) (removed bool, err error) {
	vip = normalize(vip)
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.held[vip]
	if !ok {
		return false, nil
	}
	if _, ok := e.owners[owner]; !ok {
		return false, nil
	}
	if len(e.owners) > 1 {
		delete(e.owners, owner)
		return false, nil
	}
	if err := m.del(vip, e.index); err != nil {
		m.forgetLinks()
		return false, fmt.Errorf("unbinding %s from %q: %w", vip, e.iface, err)
	}
	delete(m.held, vip)
	m.recordDel(vip)
	m.log.V(1).Info("unbound address", "vip", vip, "iface", e.iface)
	return true, nil
}

// del removes the host prefix of vip from the interface with index; an
// address or interface that is already gone counts as success.
func (m *Manager) del(vip netip.Addr, index int) error {
	a := &netlink.Addr{IPNet: hostPrefix(vip), LinkIndex: index}
	err := m.k.AddrDel(nil, a)
	if err == nil || errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ENODEV) {
		return nil
	}
	return err
}

// Held returns the addresses this Manager holds, sorted.
func (m *Manager) Held() []netip.Addr {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]netip.Addr, 0, len(m.held))
	for a := range m.held {
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// Len returns the number of addresses this Manager holds.
func (m *Manager) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.held)
}

// Interface returns the interface vip is bound to and whether it is held.
func (m *Manager) Interface(vip netip.Addr) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.held[normalize(vip)]
	if !ok {
		return "", false
	}
	return e.iface, true
}

// Owners returns the owners of vip, sorted; nil when it is not held.
func (m *Manager) Owners(vip netip.Addr) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.held[normalize(vip)]
	if !ok {
		return nil
	}
	out := make([]string, 0, len(e.owners))
	for o := range e.owners {
		out = append(out, o)
	}
	sort.Strings(out)
	return out
}

// HasOwner reports whether owner holds vip.
func (m *Manager) HasOwner(owner string, vip netip.Addr) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.held[normalize(vip)]
	if !ok {
		return false
	}
	_, ok = e.owners[owner]
	return ok
}

// Close releases the netlink handle if New made it. It does not remove
// addresses: call RemoveAll first for that.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	m.closeHandle()
	return m.j.close()
}
