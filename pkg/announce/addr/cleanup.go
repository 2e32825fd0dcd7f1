package addr

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
)

// recordAdd appends an add record; callers hold m.mu.
func (m *Manager) recordAdd(vip netip.Addr, iface string) error {
	return m.j.append(record{Op: opAdd, Addr: vip, Iface: iface})
}

// recordDel appends a del record and compacts the journal when it has grown
// too long. The kernel state already changed, so failures are only logged:
// a stale add record costs a harmless no-op removal at the next Cleanup.
// Callers hold m.mu.
func (m *Manager) recordDel(vip netip.Addr) {
	if err := m.j.append(record{Op: opDel, Addr: vip}); err != nil {
		m.log.Error(err, "state file not updated", "path", m.j.path, "vip", vip)
	}
	if m.j.lines > 2*(len(m.held)+len(m.leftovers))+compactSlack {
		if err := m.compact(); err != nil {
			m.log.Error(err, "state file not compacted", "path", m.j.path)
		}
	}
}

// compactSlack is how many records beyond twice the live set the journal may
// hold before it is rewritten.
const compactSlack = 64

// compact rewrites the journal with the held and leftover addresses.
// Callers hold m.mu.
func (m *Manager) compact() error {
	live := make(map[netip.Addr]string, len(m.held)+len(m.leftovers))
	for a, iface := range m.leftovers {
		live[a] = iface
	}
	for a, e := range m.held {
		live[a] = e.iface
	}
	return m.j.rewrite(live)
}

// Cleanup removes the addresses a previous run left behind: those recorded
// in the state file, and IPv4 addresses carrying the "<iface>:vip" label,
// except those this Manager holds now. Call it at start, before announcing.
func (m *Manager) Cleanup(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	m.forgetLinks() // start from what the kernel says now
	var todo []leftover
	for vip, iface := range m.leftovers {
		if _, ok := m.held[vip]; ok {
			delete(m.leftovers, vip)
			continue
		}
		link, err := m.linkByName(iface)
		if err != nil {
			if linkGone(err) {
				delete(m.leftovers, vip) // the interface went, and its addresses with it
				continue
			}
			return fmt.Errorf("cleaning up %s: looking up %q: %w", vip, iface, err)
		}
		todo = append(todo, leftover{vip, iface, link.index})
	}
	labelled, err := m.labelled()
	if err != nil {
		return err
	}
	for _, s := range labelled {
		if _, ok := m.held[s.vip]; ok {
			continue
		}
		if _, ok := m.leftovers[s.vip]; ok {
			continue
		}
		todo = append(todo, s)
	}

	var errs []error
	for _, s := range todo {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		if err := m.del(s.vip, s.index); err != nil {
			errs = append(errs, fmt.Errorf("removing leftover %s from %q: %w", s.vip, s.iface, err))
			continue
		}
		delete(m.leftovers, s.vip)
		m.log.Info("removed address left by a previous run", "vip", s.vip, "iface", s.iface)
	}
	if err := m.compact(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// leftover is an address a previous run added.
type leftover struct {
	vip   netip.Addr
	iface string
	index int
}

// labelled lists IPv4 host addresses whose label is "<their iface>:vip".
func (m *Manager) labelled() ([]leftover, error) {
	addrs, err := m.k.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("listing IPv4 addresses: %w", err)
	}
	var out []leftover
	for _, a := range addrs {
		if !strings.HasSuffix(a.Label, LabelSuffix) {
			continue
		}
		if ones, bits := a.Mask.Size(); ones != bits {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = normalize(ip)
		link, err := m.linkByIndex(a.LinkIndex)
		if err != nil {
			continue
		}
		name := link.name
		if a.Label != label(ip, name) {
			continue
		}
		out = append(out, leftover{ip, name, a.LinkIndex})
	}
	return out, nil
}

// RemoveAll removes every address this Manager holds, whatever its owners,
// and records that. Addresses it cannot remove stay held, so a later call
// can retry.
func (m *Manager) RemoveAll(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for vip, e := range m.held {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		if err := m.del(vip, e.index); err != nil {
			errs = append(errs, fmt.Errorf("unbinding %s from %q: %w", vip, e.iface, err))
			continue
		}
		delete(m.held, vip)
		m.log.V(1).Info("unbound address", "vip", vip, "iface", e.iface)
	}
	if err := m.compact(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
