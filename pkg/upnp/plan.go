package upnp

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Protocols a gateway maps.
const (
	TCP = "TCP"
	UDP = "UDP"
)

// ID identifies a mapping on the gateway: its external port and protocol
// (vip never sets a remote host, so these are unique on the gateway).
type ID struct {
	Protocol string
	Port     uint16
}

func (id ID) String() string { return fmt.Sprintf("%s/%d", id.Protocol, id.Port) }

func (id ID) compare(o ID) int {
	return cmp.Or(cmp.Compare(id.Protocol, o.Protocol), cmp.Compare(id.Port, o.Port))
}

// Mapping is one forwarded port: the gateway's external Port (protocol
// Protocol) goes to VIP on the same port.
type Mapping struct {
	ID
	VIP netip.Addr
}

func (m Mapping) String() string { return m.ID.String() + "→" + m.VIP.String() }

// Want is what one owner asks for.
type Want struct {
	Mappings []Mapping
	// Lease is the lease duration asked for each mapping; 0 asks for a
	// permanent mapping (still refreshed every RefreshPermanent).
	Lease time.Duration
}

// Held is a mapping this node holds on the gateway.
type Held struct {
	Owner string
	Mapping
	// Lease is the lease the gateway accepted (0 = permanent).
	Lease time.Duration
	// Asked is the lease that was asked for (differs from Lease after the
	// permanent-only fallback).
	Asked time.Duration
	// RenewAt is when the mapping is added again.
	RenewAt time.Time
}

// OpKind says what an Op does.
type OpKind int

// The operations.
const (
	// OpDelete removes a mapping (it is no longer wanted, or moves).
	OpDelete OpKind = iota
	// OpAdd creates a mapping, or replaces one with other settings.
	OpAdd
	// OpRenew adds an unchanged mapping again before its lease ends.
	OpRenew
)

func (k OpKind) String() string {
	switch k {
	case OpDelete:
		return "delete"
	case OpAdd:
		return "add"
	case OpRenew:
		return "renew"
	}
	return fmt.Sprintf("OpKind(%d)", int(k))
}

// Op is one call to make on the gateway.
type Op struct {
	Kind  OpKind
	Owner string
	Mapping
	Lease time.Duration
}

func (o Op) String() string { return fmt.Sprintf("%s %s %s", o.Kind, o.Owner, o.Mapping) }

// Conflict is a wanted mapping another owner got first.
type Conflict struct {
	Owner, HeldBy string
	ID            ID
}

// Plan compares what owners want with what is held and returns the calls
// that bring the gateway there, deletions first, then additions and
// renewals, each group ordered by ID. An ID wanted by several owners goes to
// the one already holding it, else to the smallest owner key; the others get
// a Conflict. Renewals are due when now is at or past RenewAt.
func Plan(want map[string]Want, held map[ID]Held, now time.Time) (ops []Op, conflicts []Conflict) {
	owners := make([]string, 0, len(want))
	for o := range want {
		owners = append(owners, o)
	}
	slices.Sort(owners)
	// winner: ID -> the owner that gets it and what it asks for.
	type claim struct {
		owner string
		m     Mapping
		lease time.Duration
	}
	winner := map[ID]claim{}
	for _, o := range owners {
		w := want[o]
		for _, m := range w.Mappings {
			c, taken := winner[m.ID]
			switch {
			case !taken:
				winner[m.ID] = claim{o, m, w.Lease}
			case c.owner == o:
				// The same ID twice for one owner: the first entry counts.
			case held[m.ID].Owner == o && held[m.ID].Owner != c.owner:
				conflicts = append(conflicts, Conflict{Owner: c.owner, HeldBy: o, ID: m.ID})
				winner[m.ID] = claim{o, m, w.Lease}
			default:
				conflicts = append(conflicts, Conflict{Owner: o, HeldBy: c.owner, ID: m.ID})
			}
		}
	}
	for id, h := range held {
		c, ok := winner[id]
		if !ok || c.owner != h.Owner || c.m.VIP != h.VIP {
			ops = append(ops, Op{Kind: OpDelete, Owner: h.Owner, Mapping: h.Mapping, Lease: h.Lease})
		}
	}
	for id, c := range winner {
		h, ok := held[id]
		switch {
		case !ok || h.Owner != c.owner || h.VIP != c.m.VIP || h.Asked != c.lease:
			ops = append(ops, Op{Kind: OpAdd, Owner: c.owner, Mapping: c.m, Lease: c.lease})
		case !now.Before(h.RenewAt):
			ops = append(ops, Op{Kind: OpRenew, Owner: c.owner, Mapping: c.m, Lease: c.lease})
		}
	}
	slices.SortFunc(ops, func(a, b Op) int {
		return cmp.Or(cmp.Compare(min(a.Kind, OpAdd), min(b.Kind, OpAdd)), a.ID.compare(b.ID))
	})
	slices.SortFunc(conflicts, func(a, b Conflict) int {
		return cmp.Or(cmp.Compare(a.Owner, b.Owner), a.ID.compare(b.ID))
	})
	return ops, conflicts
}

// RenewAt is when a mapping added at now with the accepted lease is added
// again: at half its lease, so one failed attempt still leaves time to retry
// before it expires; permanent mappings every refresh (they vanish when the
// gateway restarts).
func RenewAt(now time.Time, lease, refresh time.Duration) time.Time {
	if lease <= 0 {
		return now.Add(refresh)
	}
	return now.Add(lease / 2)
}

// NextRenewal is the earliest RenewAt among held (zero time if none).
func NextRenewal(held map[ID]Held) time.Time {
	var t time.Time
	for _, h := range held {
		if t.IsZero() || h.RenewAt.Before(t) {
			t = h.RenewAt
		}
	}
	return t
}
