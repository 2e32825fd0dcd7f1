package fake

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"sync"

	"github.com/vip-lb/vip/pkg/announce"
)

// Operations recorded in Call.Op.
const (
	// OpAnnounce records Announce.
	OpAnnounce = "announce"
	// OpWithdraw records Withdraw.
	OpWithdraw = "withdraw"
	// OpClose records Close.
	OpClose = "close"
)

// Call is one recorded method call.
type Call struct {
	// Op is OpAnnounce, OpWithdraw or OpClose.
	Op string
	// Owner, VIP and Iface are the arguments (zero for OpClose).
	Owner string
	VIP   netip.Addr
	Iface string
}

// String formats the call for test failure messages.
func (c Call) String() string {
	if c.Op == OpClose {
		return c.Op
	}
	return fmt.Sprintf("%s %s %s %q", c.Op, c.Owner, c.VIP, c.Iface)
}

// Announcer is a recording, in-memory announce.Announcer. The zero value is
// ready to use and safe for concurrent use.
type Announcer struct {
	// Fail, if set, is consulted before each Announce and Withdraw; a
	// non-nil result is returned and the call changes nothing (it is still
	// recorded).
	Fail func(op, owner string, vip netip.Addr) error

	mu     sync.Mutex
	calls  []Call
	owners map[netip.Addr]map[string]string // vip -> owner -> iface
	closed bool
}

var _ announce.Announcer = (*Announcer)(nil)

// New returns an empty Announcer.
func New() *Announcer { return &Announcer{} }

// Announce records the call and adds owner to vip.
func (a *Announcer) Announce(_ context.Context, owner string, vip netip.Addr, iface string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, Call{Op: OpAnnounce, Owner: owner, VIP: vip, Iface: iface})
	if a.closed {
		return announce.ErrClosed
	}
	if a.Fail != nil {
		if err := a.Fail(OpAnnounce, owner, vip); err != nil {
			return err
		}
	}
	if a.owners == nil {
		a.owners = map[netip.Addr]map[string]string{}
	}
	if a.owners[vip] == nil {
		a.owners[vip] = map[string]string{}
	}
	a.owners[vip][owner] = iface
	return nil
}

// Withdraw records the call and drops owner from vip.
func (a *Announcer) Withdraw(_ context.Context, owner string, vip netip.Addr) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, Call{Op: OpWithdraw, Owner: owner, VIP: vip})
	if a.closed {
		return announce.ErrClosed
	}
	if a.Fail != nil {
		if err := a.Fail(OpWithdraw, owner, vip); err != nil {
			return err
		}
	}
	delete(a.owners[vip], owner)
	if len(a.owners[vip]) == 0 {
		delete(a.owners, vip)
	}
	return nil
}

// Held returns the addresses with at least one owner, sorted.
func (a *Announcer) Held() []netip.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]netip.Addr, 0, len(a.owners))
	for v := range a.owners {
		out = append(out, v)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// Close records the call and forgets every address.
func (a *Announcer) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, Call{Op: OpClose})
	a.closed = true
	a.owners = nil
	return nil
}

// Owners returns the owners of vip, sorted.
func (a *Announcer) Owners(vip netip.Addr) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]string, 0, len(a.owners[vip]))
	for o := range a.owners[vip] {
		out = append(out, o)
	}
	sort.Strings(out)
	return out
}

// Bound returns every held address with its interface (that of its first
// owner in sorted order).
func (a *Announcer) Bound() map[netip.Addr]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[netip.Addr]string, len(a.owners))
	for v, owners := range a.owners {
		keys := make([]string, 0, len(owners))
		for o := range owners {
			keys = append(keys, o)
		}
		sort.Strings(keys)
		out[v] = owners[keys[0]]
	}
	return out
}

// Calls returns a copy of the recorded calls, oldest first.
func (a *Announcer) Calls() []Call {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.calls)
}

// Reset forgets the recorded calls but keeps the held addresses.
func (a *Announcer) Reset() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = nil
}

// Closed reports whether Close was called.
func (a *Announcer) Closed() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.closed
}
