package ipam

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
)

// Request asks for the addresses of one Service.
type Request struct {
	// Key identifies the Service, e.g. "namespace/name".
	Key string
	// Namespace selects the pools: cidr-<ns> and range-<ns>, then the global
	// ones.
	Namespace string
	// Families lists the wanted families in order (both for dual-stack). Empty
	// means: keep the families already assigned, else IPv4 if the namespace
	// has an IPv4 pool, else IPv6. Ignored when Requested is set.
	Families []Family
	// Ports are the Service's ports; they decide whether it may share an
	// address with other Services.
	Ports []Port
	// Requested lists static addresses; empty means pick from the pools.
	Requested []netip.Addr
	// SharingKey and ShareWith are the Service's consent to share its
	// address with Services of other namespaces: both Services must carry
	// the same non-empty key and each must list the other's namespace (or
	// "*") in ShareWith. Inside one namespace allow-share-<ns> is enough.
	SharingKey string
	ShareWith  []string
}

// holding is what one key holds.
type holding struct {
	ns         string
	addrs      []netip.Addr
	ports      []Port // normalized
	shareable  bool
	sharingKey string
	shareWith  []string
}

// claim is what a key asks to hold, for the sharing checks.
type claim struct {
	key, ns    string
	ports      []Port // normalized
	shareable  bool
	sharingKey string
	shareWith  []string
}

func claimOf(req Request, ports []Port, shareable bool) claim {
	return claim{key: req.Key, ns: req.Namespace, ports: ports, shareable: shareable,
		sharingKey: req.SharingKey, shareWith: req.ShareWith}
}

// Allocator hands out addresses from the pools of a Config and remembers who
// holds what. It keeps no package-level state, and its methods are safe for
// concurrent use (one internal mutex).
//
// Picking is incremental: each range keeps a cursor below (or, for
// search-order desc, above) which no address is free. The cursor moves on as
// addresses are taken and back when one is released, so a run of N
// assignments costs O(N) however many addresses are already held.
type Allocator struct {
	mu        sync.Mutex
	cfg       *Config
	forbidden func(netip.Addr) bool
	states    []*poolState // one per pool of cfg
	byName    map[string]*poolState
	keys      map[string]*holding
	inUse     map[netip.Addr][]string // address -> holder keys
	shared    map[netip.Addr]struct{} // held, and every holder is shareable
	used      map[string]int          // pool name -> addresses in use
}

// NewAllocator returns an allocator with an empty configuration.
func NewAllocator() *Allocator {
	a := &Allocator{
		keys:   map[string]*holding{},
		inUse:  map[netip.Addr][]string{},
		shared: map[netip.Addr]struct{}{},
	}
	a.setConfigLocked(&Config{})
	return a
}

// SetConfig replaces the pools. Existing assignments are kept as they are,
// even when their addresses are no longer in any pool. A nil cfg means no
// pools.
func (a *Allocator) SetConfig(cfg *Config) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if cfg == nil {
		cfg = &Config{}
	}
	a.setConfigLocked(cfg)
}

func (a *Allocator) setConfigLocked(cfg *Config) {
	a.cfg = cfg
	a.states = a.states[:0]
	a.byName = map[string]*poolState{}
	for _, p := range cfg.pools {
		st := newPoolState(p)
		a.states = append(a.states, st)
		a.byName[p.name] = st
	}
	a.used = map[string]int{}
	for addr := range a.inUse {
		for _, st := range a.states {
			if st.p.contains(addr) {
				a.used[st.p.name]++
			}
		}
	}
}

// SetForbidden installs a check for addresses that must never be handed out
// on top of the built-in ones, e.g. node addresses and the control-plane VIP.
// It is called with the allocator's lock held and must not call back into the
// allocator. Call SetForbidden again whenever its answers change (for
// example when node addresses change), so that addresses it no longer refuses
// are searched again. Pass nil to remove it.
func (a *Allocator) SetForbidden(f func(netip.Addr) bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.forbidden = f
	for _, st := range a.states {
		st.reset() // addresses may have become free
	}
}

// Assign returns the addresses for req, allocating them when needed.
//
// A key that already holds addresses gets them back unchanged, whatever the
// pools say now; only a changed static request, or a change of families,
// changes an assignment. Pools are searched namespace first (cidr-<ns>,
// range-<ns>), then global (cidr-global, range-global); inside a pool the
// lowest free address wins, or the highest with search-order desc. When the
// namespace allows sharing and the request has ports, an address already
// shared by Services whose ports do not clash is preferred, as
// kube-vip-cloud-provider does. Dual-stack requests get every family or
// nothing.
//
// A pool holding the DHCP marker 0.0.0.0/32 yields 0.0.0.0 for IPv4; that
// address is not recorded and the caller treats it like a request for DHCP.
// A static request for 0.0.0.0 is refused with ErrForbidden: DHCP requests
// are for the caller to handle.
func (a *Allocator) Assign(req Request) ([]netip.Addr, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if req.Key == "" {
		return nil, fmt.Errorf("assigning addresses: empty key: %w", ErrBadRequest)
	}
	ports := normalizePorts(req.Ports)
	c := claimOf(req, ports, a.cfg.Shareable(req.Namespace))
	if len(req.Requested) > 0 {
		return a.assignStatic(req, c)
	}
	old := a.keys[req.Key]
	fams, err := a.families(req, old)
	if err != nil {
		return nil, err
	}
	out := make([]netip.Addr, 0, len(fams))
	for _, f := range fams {
		if old != nil && slices.ContainsFunc(old.addrs, func(x netip.Addr) bool { return FamilyOf(x) == f }) {
			for _, x := range old.addrs {
				if FamilyOf(x) == f {
					out = append(out, x) // every held address of f, e.g. two static ones
				}
			}
			continue
		}
		addr, err := a.pick(req, f, c)
		if err != nil {
			return nil, err // nothing recorded yet: no partial assignment
		}
		out = append(out, addr)
	}
	keep := slices.DeleteFunc(slices.Clone(out), netip.Addr.IsUnspecified)
	if old != nil {
		if err := a.checkPorts(req.Key, keep, ports); err != nil {
			return nil, err
		}
	}
	a.setHolding(c, keep)
	return out, nil
}

// families returns the validated, de-duplicated families to assign.
func (a *Allocator) families(req Request, old *holding) ([]Family, error) {
	var fams []Family
	for _, f := range req.Families {
		if !f.valid() {
			return nil, fmt.Errorf("assigning addresses for %s: unknown family %d: %w", req.Key, f, ErrBadRequest)
		}
		if !slices.Contains(fams, f) {
			fams = append(fams, f)
		}
	}
	if len(fams) > 0 {
		return fams, nil
	}
	if old != nil && len(old.addrs) > 0 {
		for _, x := range old.addrs {
			if f := FamilyOf(x); !slices.Contains(fams, f) {
				fams = append(fams, f)
			}
		}
		return fams, nil
	}
	for _, p := range a.cfg.eligible(req.Namespace) {
		if p.has(IPv4) {
			return []Family{IPv4}, nil
		}
	}
	for _, p := range a.cfg.eligible(req.Namespace) {
		if p.has(IPv6) {
			return []Family{IPv6}, nil
		}
	}
	return []Family{IPv4}, nil // pick reports ErrNoPool
}

// assignStatic handles a request for specific addresses.
func (a *Allocator) assignStatic(req Request, c claim) ([]netip.Addr, error) {
	ports := c.ports
	var addrs []netip.Addr
	for _, x := range req.Requested {
		if !x.IsValid() || x.Zone() != "" {
			return nil, fmt.Errorf("assigning %q to %s: %w", x, req.Key, ErrBadRequest)
		}
		if x = x.Unmap(); !slices.Contains(addrs, x) {
			addrs = append(addrs, x)
		}
	}
	if old := a.keys[req.Key]; old != nil && sameSet(old.addrs, addrs) {
		if err := a.checkPorts(req.Key, addrs, ports); err != nil {
			return nil, err
		}
		a.setHolding(c, addrs)
		return addrs, nil
	}
	for _, x := range addrs {
		switch {
		case x.IsUnspecified():
			return nil, fmt.Errorf("assigning %s to %s: the DHCP address is handled by the caller: %w", x, req.Key, ErrForbidden)
		case a.isForbidden(x):
			return nil, fmt.Errorf("assigning %s to %s: %w", x, req.Key, ErrForbidden)
		}
		if err := a.cfg.CheckRequested(req.Namespace, x); err != nil {
			return nil, fmt.Errorf("assigning to %s: %w", req.Key, err)
		}
		if err := a.checkShare(x, c); err != nil {
			return nil, fmt.Errorf("assigning %s to %s: %w", x, req.Key, err)
		}
	}
	a.setHolding(c, addrs)
	return slices.Clone(addrs), nil
}

func sameSet(a, b []netip.Addr) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

func (a *Allocator) isForbidden(x netip.Addr) bool {
	return BuiltinForbidden(x) || (a.forbidden != nil && a.forbidden(x))
}

// checkShare returns ErrConflict unless c may hold x next to its current
// holders: everybody shareable (allow-share-<ns>), consent on both sides
// when the namespaces differ, and no port clash. The error names another
// holder only when it is in c's own namespace.
func (a *Allocator) checkShare(x netip.Addr, c claim) error {
	for _, other := range a.inUse[x] {
		if other == c.key {
			continue
		}
		h := a.keys[other]
		who := other
		if h.ns != c.ns {
			who = "a Service of another namespace"
		}
		switch {
		case !c.shareable || !h.shareable:
			return fmt.Errorf("held by %s and sharing is not allowed: %w", who, ErrConflict)
		case h.ns != c.ns && !crossConsent(c, h):
			return fmt.Errorf("held by %s; sharing across namespaces needs the same sharing key on both Services and each naming the other's namespace: %w", who, ErrConflict)
		case portsClash(c.ports, h.ports):
			return fmt.Errorf("ports clash with %s: %w", who, ErrConflict)
		}
	}
	return nil
}

// crossConsent reports whether c and h, of different namespaces, both agreed
// to share: the same non-empty sharing key, and each lists the other's
// namespace or "*".
func crossConsent(c claim, h *holding) bool {
	return c.sharingKey != "" && c.sharingKey == h.sharingKey &&
		admits(c.shareWith, h.ns) && admits(h.shareWith, c.ns)
}

func admits(list []string, ns string) bool {
	return slices.Contains(list, ns) || slices.Contains(list, "*")
}

// checkPorts returns ErrConflict when new ports of key clash with another
// holder of one of addrs. Sharing itself was agreed when the address was
// assigned, so only ports are checked.
func (a *Allocator) checkPorts(key string, addrs []netip.Addr, ports []Port) error {
	ns := ""
	if h := a.keys[key]; h != nil {
		ns = h.ns
	}
	for _, x := range addrs {
		for _, other := range a.inUse[x] {
			if other != key && portsClash(ports, a.keys[other].ports) {
				who := other
				if a.keys[other].ns != ns {
					who = "a Service of another namespace"
				}
				return fmt.Errorf("updating ports of %s on %s: ports clash with %s: %w", key, x, who, ErrConflict)
			}
		}
	}
	return nil
}

// Restore records that req.Key holds addrs, e.g. from the status of an
// existing Service after a restart; req.Requested and req.Families are
// ignored. It never fails: invalid addresses are dropped and addresses
// outside every pool, or already held, are recorded anyway. It replaces
// whatever the key held before; no addresses means Release.
func (a *Allocator) Restore(req Request, addrs []netip.Addr, shareable bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var clean []netip.Addr
	for _, x := range addrs {
		if x = x.Unmap(); x.IsValid() && x.Zone() == "" && !slices.Contains(clean, x) {
			clean = append(clean, x)
		}
	}
	a.setHolding(claimOf(req, normalizePorts(req.Ports), shareable), clean)
}

// Release forgets everything key holds. Releasing an unknown key is a no-op.
func (a *Allocator) Release(key string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.setHolding(claim{key: key}, nil)
}

// UpdatePorts records new ports for key. It returns ErrConflict, and keeps the
// old ports, when they clash with another Service sharing one of its
// addresses. An unknown key is a no-op.
func (a *Allocator) UpdatePorts(key string, ports []Port) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	h := a.keys[key]
	if h == nil {
		return nil
	}
	ports = normalizePorts(ports)
	if err := a.checkPorts(key, h.addrs, ports); err != nil {
		return err
	}
	h.ports = ports
	return nil
}

// Holders returns the sorted keys holding addr.
func (a *Allocator) Holders(addr netip.Addr) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := slices.Clone(a.inUse[addr.Unmap()])
	slices.Sort(out)
	return out
}

// Assigned returns the addresses key holds, in assignment order.
func (a *Allocator) Assigned(key string) []netip.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	if h := a.keys[key]; h != nil {
		return slices.Clone(h.addrs)
	}
	return nil
}

// Used returns how many distinct addresses of the pool named poolName (its
// ConfigMap key) are held.
func (a *Allocator) Used(poolName string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.used[poolName]
}

// setHolding makes c.key hold exactly addrs and keeps every index in step.
func (a *Allocator) setHolding(c claim, addrs []netip.Addr) {
	key := c.key
	var old []netip.Addr
	if h := a.keys[key]; h != nil {
		old = h.addrs
	}
	if len(addrs) == 0 {
		delete(a.keys, key)
	} else {
		a.keys[key] = &holding{ns: c.ns, addrs: slices.Clone(addrs), ports: c.ports, shareable: c.shareable,
			sharingKey: c.sharingKey, shareWith: slices.Clone(c.shareWith)}
	}
	for _, x := range old {
		if !slices.Contains(addrs, x) {
			a.removeHolder(x, key)
		}
	}
	for _, x := range addrs {
		if !slices.Contains(old, x) {
			a.addHolder(x, key)
		}
		a.refreshShared(x)
	}
}

func (a *Allocator) addHolder(x netip.Addr, key string) {
	hs := a.inUse[x]
	if len(hs) == 0 {
		a.countUse(x, +1)
	}
	a.inUse[x] = append(hs, key)
}

func (a *Allocator) removeHolder(x netip.Addr, key string) {
	hs := slices.DeleteFunc(a.inUse[x], func(k string) bool { return k == key })
	if len(hs) > 0 {
		a.inUse[x] = hs
		a.refreshShared(x)
		return
	}
	delete(a.inUse, x)
	delete(a.shared, x)
	a.countUse(x, -1)
	for _, st := range a.states {
		st.freed(x)
	}
}

func (a *Allocator) countUse(x netip.Addr, d int) {
	for _, st := range a.states {
		if st.p.contains(x) {
			a.used[st.p.name] += d
		}
	}
}

func (a *Allocator) refreshShared(x netip.Addr) {
	hs := a.inUse[x]
	all := len(hs) > 0
	for _, k := range hs {
		if !a.keys[k].shareable {
			all = false
			break
		}
	}
	if all {
		a.shared[x] = struct{}{}
	} else {
		delete(a.shared, x)
	}
}
