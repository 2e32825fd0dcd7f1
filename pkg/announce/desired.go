package announce

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
)

// Desired is what this node announces, declared by owner: each owner states
// the full set of addresses it wants (address -> interface, "" for the
// interface whose connected route covers the address) and Set converges
// the Announcer to it, as MetalLB's speaker declares a Service's addresses
// and lets its announcer converge. Callers keep no record of what was
// announced: Desired is that record.
//
// An owner is one caller's unit of work (the agent: an address, or a DHCP
// Service); Set calls for different owners may run in parallel, calls for
// one owner must not.
type Desired struct {
	ann Announcer

	mu   sync.Mutex
	have map[string]map[netip.Addr]string // owner -> address -> interface, as announced
}

// NewDesired returns an empty declaration over ann.
func NewDesired(ann Announcer) *Desired {
	return &Desired{ann: ann, have: map[string]map[netip.Addr]string{}}
}

// Change is what one Set did.
type Change struct {
	// Announced are the addresses announced by this call, sorted.
	Announced []netip.Addr
	// Withdrawn are the addresses withdrawn by this call (they left the
	// set or moved interface), sorted. A withdrawal that failed is listed
	// too: the address is no longer the owner's either way.
	Withdrawn []netip.Addr
	// WithdrawErr joins the failed withdrawals (each *AddrError).
	WithdrawErr error
}

// AddrError is the failure of one address in a Set.
type AddrError struct {
	Op   string // OpAnnounce or OpWithdraw
	Addr netip.Addr
	Err  error
}

func (e *AddrError) Error() string {
	verb := "announcing"
	if e.Op == OpWithdraw {
		verb = "withdrawing"
	}
	return fmt.Sprintf("%s %s: %v", verb, e.Addr, e.Err)
}
func (e *AddrError) Unwrap() error { return e.Err }

// Set converges owner's announced addresses to want (nil: none). An
// address that left want, or whose wanted interface is set and differs from
// the one it is announced on, is withdrawn first; then every wanted address
// not announced yet is announced. The error joins the failed announcements
// (each *AddrError); the others still went through, and a failed one is
// tried again by the next Set.
func (d *Desired) Set(ctx context.Context, owner string, want map[netip.Addr]string) (Change, error) {
	d.mu.Lock()
	cur := maps.Clone(d.have[owner])
	d.mu.Unlock()
	var ch Change
	var werrs, aerrs []error
	for _, addr := range sortedKeys(cur) {
		iface, keep := want[addr]
		if keep && (iface == "" || iface == cur[addr]) {
			continue
		}
		if err := d.ann.Withdraw(ctx, owner, addr); err != nil {
			werrs = append(werrs, &AddrError{OpWithdraw, addr, err})
		}
		d.record(owner, addr, "", false)
		delete(cur, addr)
		ch.Withdrawn = append(ch.Withdrawn, addr)
	}
	for _, addr := range sortedKeys(want) {
		if _, ok := cur[addr]; ok {
			continue
		}
		if err := d.ann.Announce(ctx, owner, addr, want[addr]); err != nil {
			aerrs = append(aerrs, &AddrError{OpAnnounce, addr, err})
			continue
		}
		d.record(owner, addr, want[addr], true)
		ch.Announced = append(ch.Announced, addr)
	}
	ch.WithdrawErr = errors.Join(werrs...)
	return ch, errors.Join(aerrs...)
}

func (d *Desired) record(owner string, addr netip.Addr, iface string, on bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !on {
		delete(d.have[owner], addr)
		if len(d.have[owner]) == 0 {
			delete(d.have, owner)
		}
		return
	}
	if d.have[owner] == nil {
		d.have[owner] = map[netip.Addr]string{}
	}
	d.have[owner][addr] = iface
}

// Of returns owner's announced addresses (address -> interface asked for).
func (d *Desired) Of(owner string) map[netip.Addr]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return maps.Clone(d.have[owner])
}

// Has reports whether owner has addr announced.
func (d *Desired) Has(owner string, addr netip.Addr) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.have[owner][addr]
	return ok
}

// Owners returns the owners with at least one address announced, sorted.
func (d *Desired) Owners() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Sorted(maps.Keys(d.have))
}

// Count returns how many (owner, address) pairs are announced.
func (d *Desired) Count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, m := range d.have {
		n += len(m)
	}
	return n
}

func sortedKeys(m map[netip.Addr]string) []netip.Addr {
	return slices.SortedFunc(maps.Keys(m), netip.Addr.Compare)
}
