package announce

import (
	"context"
	"errors"
	"net/netip"

	"github.com/vip-lb/vip/pkg/announce/addr"
)

// Announcer makes this node answer for virtual IPs. Owners are opaque names
// (several owners may share one address); an address stays announced while
// at least one owner holds it.
type Announcer interface {
	// Announce binds vip for owner (on iface, or on the interface whose
	// connected route covers vip when iface is empty) and announces it.
	Announce(ctx context.Context, owner string, vip netip.Addr, iface string) error
	// Withdraw drops owner from vip and unbinds vip after its last owner.
	Withdraw(ctx context.Context, owner string, vip netip.Addr) error
	// Held returns the addresses currently bound, sorted.
	Held() []netip.Addr
	// Close stops announcing and unbinds every address it bound.
	Close() error
}

// Sentinel errors, checked with errors.Is.
var (
	// ErrNotHeld means the address is not bound by this announcer.
	ErrNotHeld = errors.New("address not held")
	// ErrClosed means the announcer was closed.
	ErrClosed = errors.New("announcer closed")
	// ErrForeignAddress means the address is already on the interface and was
	// not put there by vip, so it is neither announced nor ever removed.
	ErrForeignAddress = addr.ErrForeignAddress
	// ErrNoInterface means no interface has a connected route for the address.
	ErrNoInterface = addr.ErrNoInterface
	// ErrInterfaceConflict means the address is bound on another interface.
	ErrInterfaceConflict = addr.ErrInterfaceConflict
	// ErrInvalidAddress means the address cannot be a virtual IP.
	ErrInvalidAddress = addr.ErrInvalidAddress
)
