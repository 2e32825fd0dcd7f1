package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"sync"
)

// fakeRouter records what the speaker asks of GoBGP.
type fakeRouter struct {
	mu        sync.Mutex
	started   bool
	global    globalSpec
	starts    int
	peers     map[netip.Addr]peerSpec
	paths     map[string]pathSpec // uuid -> path
	next      int
	calls     []string
	failAdd   error
	watch     func(peerEvent)
	deleteAll int
}

func newFakeRouter() *fakeRouter {
	return &fakeRouter{peers: map[netip.Addr]peerSpec{}, paths: map[string]pathSpec{}}
}

func (f *fakeRouter) log(format string, args ...any) {
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

func (f *fakeRouter) Start(_ context.Context, g globalSpec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.started, f.global = true, g
	f.starts++
	f.paths = map[string]pathSpec{}
	f.log("start %d %s", g.AS, g.RouterID)
	return nil
}

func (f *fakeRouter) Stop(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.started = false
	f.peers = map[netip.Addr]peerSpec{}
	f.log("stop")
	return nil
}

func (f *fakeRouter) AddPeer(_ context.Context, p peerSpec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.peers[p.Address]; ok {
		return errors.New("peer exists")
	}
	f.peers[p.Address] = p
	f.log("addpeer %s", p.Address)
	return nil
}

func (f *fakeRouter) DeletePeer(_ context.Context, a netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.peers[a]; !ok {
		return errors.New("no such peer")
	}
	delete(f.peers, a)
	f.log("delpeer %s", a)
	return nil
}

func (f *fakeRouter) AddPath(_ context.Context, p pathSpec) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failAdd != nil {
		return nil, f.failAdd
	}
	if !f.started {
		return nil, errors.New("not started")
	}
	for u, q := range f.paths {
		if q.Prefix == p.Prefix {
			delete(f.paths, u) // same prefix replaces
		}
	}
	f.next++
	u := fmt.Sprintf("uuid-%d", f.next)
	f.paths[u] = p
	f.log("addpath %s", p.Prefix)
	return []byte(u), nil
}

func (f *fakeRouter) DeletePath(_ context.Context, uuid []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.paths[string(uuid)]
	if !ok {
		return errors.New("can't find a specified path")
	}
	delete(f.paths, string(uuid))
	f.log("delpath %s", p.Prefix)
	return nil
}

func (f *fakeRouter) DeleteAllPaths(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.paths = map[string]pathSpec{}
	f.deleteAll++
	f.log("delall")
	return nil
}

func (f *fakeRouter) WatchPeers(_ context.Context, fn func(peerEvent)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.watch = fn
	return nil
}

func (f *fakeRouter) emit(ev peerEvent) {
	f.mu.Lock()
	fn := f.watch
	f.mu.Unlock()
	fn(ev)
}

// prefixes returns the advertised prefixes, sorted.
func (f *fakeRouter) prefixes() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, p := range f.paths {
		out = append(out, p.Prefix.String())
	}
	sort.Strings(out)
	return out
}

func (f *fakeRouter) path(prefix string) (pathSpec, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.paths {
		if p.Prefix.String() == prefix {
			return p, true
		}
	}
	return pathSpec{}, false
}

func (f *fakeRouter) peerList() []netip.Addr {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []netip.Addr
	for a := range f.peers {
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// fakeBinder stands in for addr.Manager.
type fakeBinder struct {
	mu      sync.Mutex
	held    map[netip.Addr]map[string]bool
	ifaces  map[netip.Addr]string
	failAdd error
	removed bool
	closed  bool
}

func newFakeBinder() *fakeBinder {
	return &fakeBinder{held: map[netip.Addr]map[string]bool{}, ifaces: map[netip.Addr]string{}}
}

func (b *fakeBinder) Add(owner string, vip netip.Addr, iface string) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failAdd != nil {
		return false, b.failAdd
	}
	if b.held[vip] == nil {
		b.held[vip] = map[string]bool{}
		b.ifaces[vip] = iface
		b.held[vip][owner] = true
		return true, nil
	}
	b.held[vip][owner] = true
	return false, nil
}

func (b *fakeBinder) Remove(owner string, vip netip.Addr) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.held[vip][owner] {
		return false, nil
	}
	delete(b.held[vip], owner)
	if len(b.held[vip]) == 0 {
		delete(b.held, vip)
		delete(b.ifaces, vip)
		return true, nil
	}
	return false, nil
}

func (b *fakeBinder) Held() []netip.Addr {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []netip.Addr
	for a := range b.held {
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func (b *fakeBinder) Cleanup(context.Context) error { return nil }

func (b *fakeBinder) RemoveAll(context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.held = map[netip.Addr]map[string]bool{}
	b.removed = true
	return nil
}

func (b *fakeBinder) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	return nil
}
