package dhcp

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// links is the part of *netlink.Handle this package uses.
type links interface {
	LinkByName(name string) (netlink.Link, error)
	LinkAdd(link netlink.Link) error
	LinkDel(link netlink.Link) error
	LinkSetUp(link netlink.Link) error
	LinkList() ([]netlink.Link, error)
}

var _ links = (*netlink.Handle)(nil)

func linkGone(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}

// ensureLink creates (or keeps) the macvlan name with mac on parent, up.
// A link of that name with another parent or address is replaced.
func ensureLink(h links, name, parent string, mac net.HardwareAddr) error {
	p, err := h.LinkByName(parent)
	if err != nil {
		return fmt.Errorf("%w: %q: %v", ErrNoParent, parent, err)
	}
	if l, err := h.LinkByName(name); err == nil {
		a := l.Attrs()
		if _, ok := l.(*netlink.Macvlan); ok && a.ParentIndex == p.Attrs().Index && a.HardwareAddr.String() == mac.String() {
			if a.Flags&net.FlagUp == 0 {
				return h.LinkSetUp(l)
			}
			return nil
		}
		if err := h.LinkDel(l); err != nil && !linkGone(err) {
			return fmt.Errorf("replacing %s: %w", name, err)
		}
	} else if !linkGone(err) {
		return fmt.Errorf("looking up %s: %w", name, err)
	}
	mv := &netlink.Macvlan{
		LinkAttrs: netlink.LinkAttrs{Name: name, ParentIndex: p.Attrs().Index, HardwareAddr: mac},
		Mode:      netlink.MACVLAN_MODE_BRIDGE,
	}
	if err := h.LinkAdd(mv); err != nil {
		return fmt.Errorf("adding macvlan %s on %s: %w", name, parent, err)
	}
	l, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("looking up %s: %w", name, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("setting %s up: %w", name, err)
	}
	return nil
}

// deleteLink removes the macvlan name; a missing link is fine.
func deleteLink(h links, name string) error {
	l, err := h.LinkByName(name)
	if err != nil {
		if linkGone(err) {
			return nil
		}
		return err
	}
	if err := h.LinkDel(l); err != nil && !linkGone(err) {
		return fmt.Errorf("deleting %s: %w", name, err)
	}
	return nil
}
