package dhcp

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/vishvananda/netlink"
)

// TestAgainstDnsmasq runs a Manager against a real dnsmasq: two network
// namespaces joined by a veth (10.67.0.0/24, nothing else), dnsmasq in one,
// the Manager in the other (the test binary re-runs itself there with
// `ip netns exec`, so that its raw sockets open in that namespace). Needs
// root, iproute2 and dnsmasq.
func TestAgainstDnsmasq(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		return // the child runs TestDnsmasqChild
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	for _, tool := range []string{"ip", "dnsmasq"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
	id := fmt.Sprintf("vipdt%d", os.Getpid())
	srv, cli := id+"-s", id+"-c"
	sh := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	for _, ns := range []string{srv, cli} {
		sh("ip", "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		sh("ip", "-n", ns, "link", "set", "lo", "up")
	}
	sh("ip", "link", "add", "eth0", "netns", srv, "type", "veth", "peer", "name", "eth0", "netns", cli)
	sh("ip", "-n", srv, "addr", "add", "10.67.0.1/24", "dev", "eth0")
	sh("ip", "-n", cli, "addr", "add", "10.67.0.2/24", "dev", "eth0")
	sh("ip", "-n", srv, "link", "set", "eth0", "up")
	sh("ip", "-n", cli, "link", "set", "eth0", "up")
	dir := t.TempDir()
	leases := filepath.Join(dir, "leases")
	dm := exec.Command("ip", "netns", "exec", srv, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
		"--port=0", "--interface=eth0", "--bind-interfaces", "--except-interface=lo",
		"--dhcp-range=10.67.0.100,10.67.0.120,255.255.255.0,2m", "--dhcp-option=58,3", "--dhcp-option=59,5",
		"--dhcp-authoritative", "--no-ping", "--dhcp-leasefile="+leases, "--log-dhcp", "--log-facility=-", "--user=root")
	var log strings.Builder
	var logMu sync.Mutex
	dm.Stdout, dm.Stderr = &lockedWriter{&log, &logMu}, &lockedWriter{&log, &logMu}
	if err := dm.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dm.Process.Kill(); _ = dm.Wait() })
	// dnsmasq logs its DHCP range once its sockets are bound.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		logMu.Lock()
		up := strings.Contains(log.String(), "DHCP, IP range")
		logMu.Unlock()
		if up {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("dnsmasq did not start")
		}
	}
	child := exec.Command("ip", "netns", "exec", cli, os.Args[0], "-test.run=^TestDnsmasqChild$", "-test.v", "-test.count=1")
	child.Env = append(os.Environ(), childEnv+"="+leases)
	out, err := child.CombinedOutput()
	if err != nil {
		logMu.Lock()
		t.Fatalf("child: %v\n%s\ndnsmasq:\n%s", err, out, log.String())
		logMu.Unlock()
	}
	t.Logf("child:\n%s", out)
}

const childEnv = "VIP_DHCP_TEST_LEASES"

type lockedWriter struct {
	b  *strings.Builder
	mu *sync.Mutex
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// leaseFileHas returns the address dnsmasq's lease file holds for mac.
func leaseFileHas(path, mac string) (netip.Addr, bool) {
	f, err := os.Open(path)
	if err != nil {
		return netip.Addr{}, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) >= 3 && strings.EqualFold(fs[1], mac) {
			a, err := netip.ParseAddr(fs[2])
			return a, err == nil
		}
	}
	return netip.Addr{}, false
}

// TestDnsmasqChild is the part of TestAgainstDnsmasq that runs inside the
// client namespace.
func TestDnsmasqChild(t *testing.T) {
	leases := os.Getenv(childEnv)
	if leases == "" {
		t.Skip("run by TestAgainstDnsmasq")
	}
	events := make(chan Event, 64)
	m, err := New(Options{Logger: funcr.New(func(p, a string) { t.Log(p, a) }, funcr.Options{}), Timeout: 300 * time.Millisecond, Retries: 2, Backoff: Backoff{Min: 200 * time.Millisecond, Max: time.Second},
		OnEvent: func(_ string, e Event) { events <- e }})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	// A leftover of a crashed run is removed; foreign links stay.
	h, _ := netlink.NewHandle()
	parent, _ := h.LinkByName("eth0")
	stale := LinkName("old/leftover")
	if err := ensureLink(h, stale, "eth0", MAC("old/leftover")); err != nil {
		t.Fatal(err)
	}
	if err := m.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := h.LinkByName(stale); err == nil {
		t.Fatal("stale macvlan survived Cleanup")
	}
	if _, err := h.LinkByName("eth0"); err != nil || parent == nil {
		t.Fatal("Cleanup removed the parent")
	}

	wait := func(kind EventKind, d time.Duration) Event {
		t.Helper()
		deadline := time.After(d)
		for {
			select {
			case e := <-events:
				if e.Kind == kind {
					return e
				}
			case <-deadline:
				t.Fatalf("no %v event within %v", kind, d)
			}
		}
	}
	const key = "default/web"
	t0 := time.Now()
	if err := m.Ensure(key, Params{Parent: "eth0", Hostname: "web"}); err != nil {
		t.Fatal(err)
	}
	e := wait(Obtained, time.Minute)
	t.Logf("obtained %s from %s in %v (T1 %v, T2 %v, lease %v)", e.Lease.Addr, e.Lease.Server, time.Since(t0),
		e.Lease.Times.T1, e.Lease.Times.T2, e.Lease.Times.Lease)
	l, ok := m.Lease(key)
	if !ok || l.Addr != e.Lease.Addr || l.MAC.String() != MAC(key).String() || l.Link != LinkName(key) {
		t.Fatalf("Lease = %+v, %v", l, ok)
	}
	if l.Prefix != netip.MustParsePrefix("10.67.0.0/24") || l.Server != netip.MustParseAddr("10.67.0.1") {
		t.Errorf("prefix %v server %v", l.Prefix, l.Server)
	}
	link, err := h.LinkByName(l.Link)
	if err != nil || link.Attrs().HardwareAddr.String() != MAC(key).String() || link.Attrs().ParentIndex != parent.Attrs().Index {
		t.Fatalf("macvlan %s: %v %v", l.Link, link, err)
	}
	if got, ok := leaseFileHas(leases, MAC(key).String()); !ok || got != l.Addr {
		t.Fatalf("dnsmasq lease file: %v %v, want %s", got, ok, l.Addr)
	}
	// T1 is 3 s: the lease is extended, same address.
	e = wait(Extended, time.Minute)
	if e.Lease.Addr != l.Addr || !e.Lease.Expiry().After(l.Expiry()) {
		t.Fatalf("extended lease %+v, before %+v", e.Lease, l)
	}
	// Restarted without release (a new owner): same address.
	m.Stop(key, false)
	if _, err := h.LinkByName(l.Link); err == nil {
		t.Fatal("Stop left the macvlan")
	}
	if err := m.Ensure(key, Params{Parent: "eth0"}); err != nil {
		t.Fatal(err)
	}
	if e = wait(Obtained, time.Minute); e.Lease.Addr != l.Addr {
		t.Fatalf("after a restart got %s, want %s", e.Lease.Addr, l.Addr)
	}
	// Another key gets another address.
	if err := m.Ensure("default/other", Params{Parent: "eth0"}); err != nil {
		t.Fatal(err)
	}
	if e = wait(Obtained, time.Minute); e.Lease.Addr == l.Addr {
		t.Fatalf("two keys share %s", l.Addr)
	}
	// Release: dnsmasq forgets the lease.
	m.Stop(key, true)
	deadline := time.Now().Add(time.Minute)
	for {
		if _, ok := leaseFileHas(leases, MAC(key).String()); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("dnsmasq still holds the released lease")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
