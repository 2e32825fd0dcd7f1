package nstest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Iface is the name of the veth end in both namespaces.
const Iface = "eth0"

// Addresses of the link between A and B.
var (
	// Net4 is the IPv4 subnet of the link.
	Net4 = netip.MustParsePrefix("10.66.0.0/24")
	// Net6 is the IPv6 subnet of the link.
	Net6 = netip.MustParsePrefix("fd00:66::/64")
	// A4 is A's IPv4 address.
	A4 = netip.MustParseAddr("10.66.0.1")
	// B4 is B's IPv4 address.
	B4 = netip.MustParseAddr("10.66.0.2")
	// A6 is A's IPv6 address.
	A6 = netip.MustParseAddr("fd00:66::1")
	// B6 is B's IPv6 address.
	B6 = netip.MustParseAddr("fd00:66::2")
)

var seq atomic.Int32

// RequireRoot skips tb unless it runs as root with the ip tool available.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("skipping: needs root to create network namespaces (run the tests as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		tb.Skip("skipping: the ip tool (iproute2) is not installed")
	}
}

// NS is a named network namespace with a goroutine locked to an OS thread
// inside it, so code that opens sockets in "the current namespace" can run
// there.
type NS struct {
	// Name is the name under /run/netns.
	Name string
	// Handle is an open reference to the namespace.
	Handle netns.NsHandle
	// Netlink is a netlink handle inside the namespace.
	Netlink *netlink.Handle

	work chan func()
	dead chan struct{}
}

// Do runs fn on the namespace's thread and returns its error. fn must not
// call t.Fatal or runtime.Goexit.
func (n *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	select {
	case n.work <- func() { errc <- fn() }:
	case <-n.dead:
		return errors.New("nstest: namespace thread is gone")
	}
	select {
	case err := <-errc:
		return err
	case <-n.dead:
		return errors.New("nstest: namespace thread is gone")
	}
}

// Exec runs a command inside the namespace with a 20s limit and returns its
// combined output.
func (n *NS) Exec(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// MustExec is Exec that fails tb on error.
func (n *NS) MustExec(tb testing.TB, args ...string) string {
	tb.Helper()
	out, err := n.Exec(args...)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// Link returns the veth end in the namespace.
func (n *NS) Link(tb testing.TB) netlink.Link {
	tb.Helper()
	l, err := n.Netlink.LinkByName(Iface)
	if err != nil {
		tb.Fatalf("%s: %v", n.Name, err)
	}
	return l
}

// MAC returns the hardware address of the veth end.
func (n *NS) MAC(tb testing.TB) net.HardwareAddr {
	tb.Helper()
	return n.Link(tb).Attrs().HardwareAddr
}

// Neigh returns the link-layer address the neighbour table of the namespace
// holds for ip, or nil.
func (n *NS) Neigh(tb testing.TB, ip netip.Addr) net.HardwareAddr {
	tb.Helper()
	family := netlink.FAMILY_V6
	if ip.Is4() {
		family = netlink.FAMILY_V4
	}
	neighs, err := n.Netlink.NeighList(n.Link(tb).Attrs().Index, family)
	if err != nil {
		tb.Fatalf("%s: listing neighbours: %v", n.Name, err)
	}
	for _, e := range neighs {
		if a, ok := netip.AddrFromSlice(e.IP); ok && a.Unmap() == ip && e.State&(netlink.NUD_INCOMPLETE|netlink.NUD_FAILED) == 0 {
			return e.HardwareAddr
		}
	}
	return nil
}

// WaitNeigh waits until the neighbour entry for ip is mac and reports
// whether it got there within timeout.
func (n *NS) WaitNeigh(tb testing.TB, ip netip.Addr, mac net.HardwareAddr, timeout time.Duration) bool {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if bytes.Equal(n.Neigh(tb, ip), mac) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// HasAddr reports whether ip is on the veth end, and with which prefix length.
func (n *NS) HasAddr(tb testing.TB, ip netip.Addr) (bool, int) {
	tb.Helper()
	addrs, err := n.Netlink.AddrList(n.Link(tb), netlink.FAMILY_ALL)
	if err != nil {
		tb.Fatalf("%s: listing addresses: %v", n.Name, err)
	}
	for _, a := range addrs {
		if x, ok := netip.AddrFromSlice(a.IP); ok && x.Unmap() == ip {
			ones, _ := a.Mask.Size()
			return true, ones
		}
	}
	return false, 0
}

// Pair is two namespaces, A and B, joined by a veth pair named Iface on both
// sides, with A4/A6 on A and B4/B6 on B. It has no default route.
type Pair struct {
	A, B *NS
}

// NewPair creates a Pair and removes it when tb ends.
func NewPair(tb testing.TB) *Pair {
	tb.Helper()
	RequireRoot(tb)
	id := seq.Add(1)
	p := &Pair{
		A: newNS(tb, fmt.Sprintf("vipt%d-%da", os.Getpid(), id)),
		B: newNS(tb, fmt.Sprintf("vipt%d-%db", os.Getpid(), id)),
	}
	run(tb, "link", "add", Iface, "netns", p.A.Name, "type", "veth", "peer", "name", Iface, "netns", p.B.Name)
	for _, s := range []struct {
		ns     *NS
		v4, v6 netip.Addr
	}{{p.A, A4, A6}, {p.B, B4, B6}} {
		n := s.ns.Name
		run(tb, "-n", n, "addr", "add", netip.PrefixFrom(s.v4, Net4.Bits()).String(), "dev", Iface)
		run(tb, "-n", n, "addr", "add", netip.PrefixFrom(s.v6, Net6.Bits()).String(), "dev", Iface, "nodad")
		run(tb, "-n", n, "link", "set", Iface, "up")
	}
	return p
}

// newNS creates a namespace with lo up and DAD off, and its thread.
func newNS(tb testing.TB, name string) *NS {
	tb.Helper()
	run(tb, "netns", "add", name)
	tb.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			tb.Errorf("deleting namespace %s: %v: %s", name, err, out)
		}
	})
	n := &NS{Name: name, work: make(chan func()), dead: make(chan struct{})}
	n.MustExec(tb, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
	run(tb, "-n", name, "link", "set", "lo", "up")

	h, err := netns.GetFromName(name)
	if err != nil {
		tb.Fatalf("opening namespace %s: %v", name, err)
	}
	n.Handle = h
	tb.Cleanup(func() { _ = h.Close() })
	if n.Netlink, err = netlink.NewHandleAt(h); err != nil {
		tb.Fatalf("netlink handle in %s: %v", name, err)
	}
	tb.Cleanup(n.Netlink.Close)

	ready := make(chan error)
	go n.loop(ready)
	if err := <-ready; err != nil {
		tb.Fatalf("entering namespace %s: %v", name, err)
	}
	tb.Cleanup(func() { close(n.work) })
	return n
}

// loop serves Do on a thread inside the namespace. It never unlocks the
// thread, so the runtime destroys it when loop returns instead of reusing a
// thread that sits in the wrong namespace.
func (n *NS) loop(ready chan<- error) {
	defer close(n.dead)
	runtime.LockOSThread()
	if err := netns.Set(n.Handle); err != nil {
		ready <- err
		return
	}
	ready <- nil
	for fn := range n.work {
		fn()
	}
}

// run runs the ip tool in the root namespace and fails tb on error.
func run(tb testing.TB, args ...string) {
	tb.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		tb.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
}
