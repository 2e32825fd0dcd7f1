package ipam

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"go4.org/netipx"
)

// poolState is the allocator's per-pool search state.
type poolState struct {
	p   *pool
	cur [2][]cursor // per family, per range of p.rr
}

// cursor bounds the free addresses of one range: nothing in [From, lo) and
// nothing in (hi, To] is free. loDone/hiDone mean the whole range was passed.
type cursor struct {
	lo, hi         netip.Addr
	loDone, hiDone bool
}

func newPoolState(p *pool) *poolState {
	st := &poolState{p: p}
	for i := range p.rr {
		st.cur[i] = make([]cursor, len(p.rr[i]))
	}
	st.reset()
	return st
}

func (st *poolState) reset() {
	for i, rr := range st.p.rr {
		for j, r := range rr {
			st.cur[i][j] = cursor{lo: r.From(), hi: r.To()}
		}
	}
}

// freed moves the cursors of the range holding x back to x.
func (st *poolState) freed(x netip.Addr) {
	fi := FamilyOf(x).index()
	j := findRange(st.p.rr[fi], x)
	if j < 0 {
		return
	}
	c := &st.cur[fi][j]
	if c.loDone || x.Less(c.lo) {
		c.lo, c.loDone = x, false
	}
	if c.hiDone || c.hi.Less(x) {
		c.hi, c.hiDone = x, false
	}
}

// pick chooses one address of family f for req. Nothing is recorded.
func (a *Allocator) pick(req Request, f Family, c claim) (netip.Addr, error) {
	var pools []*poolState
	for _, p := range a.cfg.eligible(req.Namespace) {
		if p.has(f) {
			pools = append(pools, a.byName[p.name])
		}
	}
	if len(pools) == 0 {
		return netip.Addr{}, fmt.Errorf("allocating %s for %s: namespace %q: %w", f, req.Key, req.Namespace, ErrNoPool)
	}
	if c.shareable && len(c.ports) > 0 {
		if x, ok := a.pickShared(pools, f, c); ok {
			return x, nil
		}
	}
	for _, st := range pools {
		if f == IPv4 && st.p.dhcp {
			return netip.IPv4Unspecified(), nil
		}
		if x, ok := a.scan(st, f); ok {
			return x, nil
		}
	}
	names := make([]string, len(pools))
	for i, st := range pools {
		names[i] = strconv.Quote(st.p.name)
	}
	noun := "pool"
	if len(names) > 1 {
		noun = "pools"
	}
	return netip.Addr{}, fmt.Errorf("allocating %s for %s from %s %s: %w",
		f, req.Key, noun, strings.Join(names, ", "), ErrPoolExhausted)
}

// pickShared returns the best already-shared address that key may join: in
// the first pool of the search order, lowest (or highest) first.
func (a *Allocator) pickShared(pools []*poolState, f Family, c claim) (netip.Addr, bool) {
	var best netip.Addr
	bestRank := len(pools)
	for x := range a.shared {
		if FamilyOf(x) != f || a.isForbidden(x) || a.checkShare(x, c) != nil {
			continue
		}
		for rank, st := range pools {
			if rank > bestRank {
				break
			}
			if !st.p.contains(x) {
				continue
			}
			if a.skipped(st, x) {
				// Shared because somebody requested it: joining it would
				// be a pick of an address picks never hand out.
				break
			}
			better := rank < bestRank || (a.cfg.desc && best.Less(x)) || (!a.cfg.desc && x.Less(best))
			if better {
				best, bestRank = x, rank
			}
			break
		}
	}
	return best, bestRank < len(pools)
}

// scan returns the first free address of family f in st, in search order,
// and advances the cursors past what it had to skip.
func (a *Allocator) scan(st *poolState, f Family) (netip.Addr, bool) {
	fi := f.index()
	rr := st.p.rr[fi]
	for i := range rr {
		j := i
		if a.cfg.desc {
			j = len(rr) - 1 - i
		}
		c := &st.cur[fi][j]
		var x netip.Addr
		var ok bool
		if a.cfg.desc {
			x, ok = a.scanDown(st, rr[j], c)
		} else {
			x, ok = a.scanUp(st, rr[j], c)
		}
		if ok {
			return x, true
		}
	}
	return netip.Addr{}, false
}

// free reports whether x may be picked from st: not skipped, unheld and not
// forbidden. Built-in forbidden blocks are handled by the scanners, which
// jump over them.
func (a *Allocator) free(st *poolState, x netip.Addr) bool {
	return !a.skipped(st, x) && len(a.inUse[x]) == 0 && (a.forbidden == nil || !a.forbidden(x))
}

// skipped reports whether a pick from st never lands on x: an end address
// of one of st's CIDR entries, or an IPv4 .0 or .255 unless
// skip-dot0-dot255 is false. A requested address is not a pick.
func (a *Allocator) skipped(st *poolState, x netip.Addr) bool {
	if _, end := st.p.ends[x]; end {
		return true
	}
	if x.Is4() && a.cfg.SkipDot0Dot255() {
		if b := x.As4(); b[3] == 0 || b[3] == 255 {
			return true
		}
	}
	return false
}

// scanUp finds the lowest free address at or above the cursor. The cursor is
// left on the returned address, which stays valid if the caller drops it.
func (a *Allocator) scanUp(st *poolState, r netipx.IPRange, c *cursor) (netip.Addr, bool) {
	if c.loDone {
		return netip.Addr{}, false
	}
	x := c.lo
	for {
		if blk, ok := forbiddenBlock(x); ok {
			if !blk.To().Less(r.To()) {
				c.loDone = true
				return netip.Addr{}, false
			}
			x = blk.To().Next()
			continue
		}
		if a.free(st, x) {
			c.lo = x
			return x, true
		}
		if x == r.To() {
			c.loDone = true
			return netip.Addr{}, false
		}
		x = x.Next()
	}
}

// scanDown is scanUp from the high end, for search-order desc.
func (a *Allocator) scanDown(st *poolState, r netipx.IPRange, c *cursor) (netip.Addr, bool) {
	if c.hiDone {
		return netip.Addr{}, false
	}
	x := c.hi
	for {
		if blk, ok := forbiddenBlock(x); ok {
			if !r.From().Less(blk.From()) {
				c.hiDone = true
				return netip.Addr{}, false
			}
			x = blk.From().Prev()
			continue
		}
		if a.free(st, x) {
			c.hi = x
			return x, true
		}
		if x == r.From() {
			c.hiDone = true
			return netip.Addr{}, false
		}
		x = x.Prev()
	}
}
