package addr

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

var (
	v4 = netip.MustParseAddr("10.0.0.100")
	v6 = netip.MustParseAddr("fd00::100")
)

func newTest(t *testing.T, k *fakeKernel, path string) *Manager {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "addresses.json")
	}
	return newManager(k, Options{StatePath: path})
}

// recorded returns the addresses in the state file at path.
func recorded(t *testing.T, path string) []netip.Addr {
	t.Helper()
	live, _, bad, err := readJournal(path)
	if err != nil || bad != 0 {
		t.Fatalf("reading %s: %v (%d bad records)", path, err, bad)
	}
	var out []netip.Addr
	for a := range live {
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func TestRefcount(t *testing.T) {
	k := newFakeKernel("eth0")
	m := newTest(t, k, "")
	steps := []struct {
		op      string
		owner   string
		want    bool
		present bool
		owners  []string
	}{
		{"add", "a", true, true, []string{"a"}},
		{"add", "b", false, true, []string{"a", "b"}},
		{"add", "a", false, true, []string{"a", "b"}},
		{"remove", "a", false, true, []string{"b"}},
		{"remove", "nobody", false, true, []string{"b"}},
		{"remove", "b", true, false, nil},
		{"remove", "b", false, false, nil},
		{"add", "c", true, true, []string{"c"}},
	}
	for i, s := range steps {
		var got bool
		var err error
		if s.op == "add" {
			got, err = m.Add(s.owner, v4, "eth0")
		} else {
			got, err = m.Remove(s.owner, v4)
		}
		if err != nil || got != s.want {
			t.Fatalf("step %d %s %s: got %v, %v; want %v", i, s.op, s.owner, got, err, s.want)
		}
		if _, ok := k.find("10.0.0.100/32", "eth0"); ok != s.present {
			t.Fatalf("step %d: present in kernel %v, want %v", i, ok, s.present)
		}
		if o := m.Owners(v4); !slices.Equal(o, s.owners) {
			t.Fatalf("step %d: owners %v, want %v", i, o, s.owners)
		}
		wantRec := []netip.Addr(nil)
		if s.present {
			wantRec = []netip.Addr{v4}
		}
		if r := recorded(t, m.j.path); !slices.Equal(r, wantRec) {
			t.Fatalf("step %d: state file %v, want %v", i, r, wantRec)
		}
	}
	if k.adds != 2 {
		t.Errorf("kernel saw %d adds, want 2", k.adds)
	}
}

func TestAddressShape(t *testing.T) {
	k := newFakeKernel("eth0", "enp0s31f6.4000")
	m := newTest(t, k, "")
	for _, c := range []struct {
		vip   netip.Addr
		iface string
	}{{v4, "eth0"}, {v6, "eth0"}, {netip.MustParseAddr("10.0.0.101"), "enp0s31f6.4000"}} {
		if _, err := m.Add("o", c.vip, c.iface); err != nil {
			t.Fatal(err)
		}
	}
	a, ok := k.find("10.0.0.100/32", "eth0")
	if !ok || a.Label != "eth0:vip" || a.Flags != 0 {
		t.Errorf("IPv4: %+v present %v, want /32 labelled eth0:vip", a, ok)
	}
	a, _ = k.find("10.0.0.101/32", "enp0s31f6.4000")
	if a.Label != "" {
		t.Errorf("label %q for a name too long to carry one", a.Label)
	}
	a, ok = k.find("fd00::100/128", "eth0")
	if !ok || a.Flags != unix.IFA_F_NODAD|unix.IFA_F_NOPREFIXROUTE || a.PreferedLft != 0 || a.ValidLft != infinite {
		t.Errorf("IPv6: %+v present %v, want /128 nodad noprefixroute preferred 0", a, ok)
	}
	if got := m.Held(); !slices.Equal(got, []netip.Addr{v4, netip.MustParseAddr("10.0.0.101"), v6}) {
		t.Errorf("Held %v", got)
	}
}

func TestInvalidArguments(t *testing.T) {
	m := newTest(t, newFakeKernel("eth0"), "")
	for _, s := range []string{"0.0.0.0", "127.0.0.1", "224.0.0.1", "169.254.1.1", "255.255.255.255", "::", "::1", "fe80::1", "ff02::1"} {
		if _, err := m.Add("o", netip.MustParseAddr(s), "eth0"); !errors.Is(err, ErrInvalidAddress) {
			t.Errorf("%s: got %v, want ErrInvalidAddress", s, err)
		}
	}
	if _, err := m.Add("o", netip.Addr{}, "eth0"); !errors.Is(err, ErrInvalidAddress) {
		t.Errorf("zero address: got %v", err)
	}
	if _, err := m.Add("", v4, "eth0"); !errors.Is(err, ErrNoOwner) {
		t.Errorf("empty owner: got %v", err)
	}
	if _, err := m.Add("o", v4, ""); !errors.Is(err, ErrNoInterface) {
		t.Errorf("empty interface: got %v", err)
	}
	if _, err := m.Add("o", v4, "nope0"); !errors.Is(err, unix.ENODEV) {
		t.Errorf("missing interface: got %v", err)
	}
	// IPv4-mapped IPv6 is the IPv4 address.
	if _, err := m.Add("o", netip.MustParseAddr("::ffff:10.0.0.100"), "eth0"); err != nil {
		t.Fatal(err)
	}
	if got := m.Held(); !slices.Equal(got, []netip.Addr{v4}) {
		t.Errorf("Held %v", got)
	}
}

func TestForeignAddressIsNeverTouched(t *testing.T) {
	k := newFakeKernel("eth0", "kube-ipvs0")
	k.put("10.0.0.100/24", "eth0", "") // the node's own address
	k.put("fd00::100/128", "eth0", "") // an exact host address, not ours
	k.put("10.0.0.102/32", "eth0", "eth0:other")
	k.put("10.0.0.103/32", "kube-ipvs0", "") // local elsewhere: fine to bind on eth0
	m := newTest(t, k, "")
	for _, s := range []string{"10.0.0.100", "fd00::100", "10.0.0.102"} {
		added, err := m.Add("o", netip.MustParseAddr(s), "eth0")
		if !errors.Is(err, ErrForeignAddress) || added {
			t.Errorf("%s: got %v, %v; want ErrForeignAddress", s, added, err)
		}
	}
	if added, err := m.Add("o", netip.MustParseAddr("10.0.0.103"), "eth0"); err != nil || !added {
		t.Fatalf("address local on another interface: got %v, %v", added, err)
	}
	if h := m.Held(); len(h) != 1 {
		t.Errorf("Held %v, want only 10.0.0.103", h)
	}
	if _, err := m.Remove("o", netip.MustParseAddr("10.0.0.100")); err != nil {
		t.Fatal(err)
	}
	if err := m.RemoveAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := m.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][2]string{{"10.0.0.100/24", "eth0"}, {"fd00::100/128", "eth0"}, {"10.0.0.102/32", "eth0"}, {"10.0.0.103/32", "kube-ipvs0"}} {
		if _, ok := k.find(c[0], c[1]); !ok {
			t.Errorf("%s on %s was removed", c[0], c[1])
		}
	}
	if _, ok := k.find("10.0.0.103/32", "eth0"); ok {
		t.Error("RemoveAll left 10.0.0.103/32 on eth0")
	}
}

func TestRaceWithAnotherProgram(t *testing.T) {
	// The address appears between the lookup and the add: EEXIST.
	k := newFakeKernel("eth0")
	k.failAdd = unix.EEXIST
	m := newTest(t, k, "")
	if _, err := m.Add("o", v4, "eth0"); !errors.Is(err, ErrForeignAddress) {
		t.Fatalf("got %v, want ErrForeignAddress", err)
	}
	if len(m.Held()) != 0 || len(recorded(t, m.j.path)) != 0 {
		t.Errorf("held %v, recorded %v after a failed add", m.Held(), recorded(t, m.j.path))
	}
}

func TestInterfaceConflict(t *testing.T) {
	m := newTest(t, newFakeKernel("eth0", "eth1"), "")
	if _, err := m.Add("a", v4, "eth0"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Add("b", v4, "eth1"); !errors.Is(err, ErrInterfaceConflict) {
		t.Fatalf("got %v, want ErrInterfaceConflict", err)
	}
	if o := m.Owners(v4); !slices.Equal(o, []string{"a"}) {
		t.Errorf("owners %v", o)
	}
}

func TestFailuresKeepState(t *testing.T) {
	k := newFakeKernel("eth0")
	m := newTest(t, k, "")
	k.failAdd = unix.EPERM
	if _, err := m.Add("a", v4, "eth0"); !errors.Is(err, unix.EPERM) {
		t.Fatalf("got %v, want EPERM", err)
	}
	if len(recorded(t, m.j.path)) != 0 {
		t.Error("state file keeps an address whose add failed")
	}
	k.failAdd = nil
	if _, err := m.Add("a", v4, "eth0"); err != nil {
		t.Fatal(err)
	}
	k.failDel = unix.EPERM
	if _, err := m.Remove("a", v4); !errors.Is(err, unix.EPERM) {
		t.Fatalf("got %v, want EPERM", err)
	}
	if !m.HasOwner("a", v4) || len(recorded(t, m.j.path)) != 1 {
		t.Fatal("a failed remove dropped the owner or the record")
	}
	if err := m.RemoveAll(context.Background()); err == nil {
		t.Fatal("RemoveAll hid an error")
	}
	k.failDel = nil
	if removed, err := m.Remove("a", v4); err != nil || !removed {
		t.Fatalf("retry: got %v, %v", removed, err)
	}
}

func TestAlreadyGoneCountsAsRemoved(t *testing.T) {
	k := newFakeKernel("eth0")
	m := newTest(t, k, "")
	if _, err := m.Add("a", v4, "eth0"); err != nil {
		t.Fatal(err)
	}
	k.addrs = nil // someone ran "ip addr flush"
	if removed, err := m.Remove("a", v4); err != nil || !removed {
		t.Fatalf("got %v, %v", removed, err)
	}
}

func TestCleanupAfterCrash(t *testing.T) {
	k := newFakeKernel("eth0", "eth1")
	path := filepath.Join(t.TempDir(), "sub", "addresses.json")
	old := newTest(t, k, path)
	for _, v := range []netip.Addr{v4, v6, netip.MustParseAddr("10.0.0.101")} {
		if _, err := old.Add("svc", v, "eth0"); err != nil {
			t.Fatal(err)
		}
	}
	k.put("10.0.0.50/24", "eth0", "") // the node's own address
	// The predecessor crashed. Its successor finds its records.
	m := newTest(t, k, path)
	// A wanted address is taken back without a flap.
	added, err := m.Add("svc", netip.MustParseAddr("10.0.0.101"), "eth0")
	if err != nil || !added {
		t.Fatalf("taking back: got %v, %v", added, err)
	}
	if k.adds != 3 {
		t.Errorf("kernel saw %d adds, want 3 (no re-add)", k.adds)
	}
	if err := m.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if k.count() != 2 {
		t.Errorf("kernel holds %d addresses, want 2: %v", k.count(), k.addrs)
	}
	if _, ok := k.find("10.0.0.101/32", "eth0"); !ok {
		t.Error("Cleanup removed an address held now")
	}
	if r := recorded(t, path); !slices.Equal(r, []netip.Addr{netip.MustParseAddr("10.0.0.101")}) {
		t.Errorf("state file %v", r)
	}
}

func TestCleanupByLabel(t *testing.T) {
	// The state file is lost (for example a container restart without a
	// host path); IPv4 leftovers are still recognised by their label.
	k := newFakeKernel("eth0", "eth1")
	k.put("10.0.0.100/32", "eth0", "eth0:vip")
	k.put("10.0.0.101/32", "eth0", "eth1:vip") // label of another interface: not ours
	k.put("10.0.0.102/24", "eth0", "eth0:vip") // not a host address: not ours
	k.put("10.0.0.103/32", "eth0", "")
	k.put("10.0.1.100/32", "eth1", "eth1:vip")
	m := newTest(t, k, "")
	if err := m.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := k.find("10.0.0.100/32", "eth0"); ok {
		t.Error("labelled leftover on eth0 kept")
	}
	if _, ok := k.find("10.0.1.100/32", "eth1"); ok {
		t.Error("labelled leftover on eth1 kept")
	}
	if k.count() != 3 {
		t.Errorf("kernel holds %d addresses, want 3", k.count())
	}
}

func TestCleanupForgetsVanishedInterfaces(t *testing.T) {
	k := newFakeKernel("eth0", "veth9")
	path := filepath.Join(t.TempDir(), "addresses.json")
	old := newTest(t, k, path)
	if _, err := old.Add("svc", v4, "veth9"); err != nil {
		t.Fatal(err)
	}
	delete(k.links, "veth9")
	k.addrs = nil
	m := newTest(t, k, path)
	if err := m.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r := recorded(t, path); len(r) != 0 {
		t.Errorf("state file %v", r)
	}
}

func TestDamagedStateFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "addresses.json")
	data := "{not json\n" + `{"op":"add","addr":"10.0.0.9","iface":"eth0"}` + "\n" + `{"op":"frob","addr":"10.0.0.8"}` + "\n"
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	k := newFakeKernel("eth0")
	k.put("10.0.0.9/32", "eth0", "")
	m := newTest(t, k, path)
	if _, err := m.Add("a", v4, "eth0"); err != nil {
		t.Fatal(err)
	}
	if err := m.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := k.find("10.0.0.9/32", "eth0"); ok {
		t.Error("the readable record was ignored")
	}
	if r := recorded(t, path); !slices.Equal(r, []netip.Addr{v4}) {
		t.Errorf("state file %v", r)
	}
}

func TestJournalStaysSmall(t *testing.T) {
	k := newFakeKernel("eth0")
	m := newTest(t, k, "")
	if _, err := m.Add("keep", v6, "eth0"); err != nil {
		t.Fatal(err)
	}
	for range 500 {
		if _, err := m.Add("a", v4, "eth0"); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Remove("a", v4); err != nil {
			t.Fatal(err)
		}
	}
	_, lines, _, err := readJournal(m.j.path)
	if err != nil {
		t.Fatal(err)
	}
	if lines > 2+compactSlack+2 {
		t.Errorf("journal has %d records for 1 live address", lines)
	}
	if r := recorded(t, m.j.path); !slices.Equal(r, []netip.Addr{v6}) {
		t.Errorf("state file %v", r)
	}
}

func TestInterfaceFor(t *testing.T) {
	k := newFakeKernel("eth0", "eth1", "kube-ipvs0")
	k.addRoute("10.0.0.0/24", "eth0", "")
	k.addRoute("10.0.0.128/25", "eth1", "")
	k.addRoute("0.0.0.0/0", "eth0", "10.0.0.1")
	k.addRoute("10.9.0.0/16", "lo", "")
	k.addRoute("fd00::/64", "eth1", "")
	k.put("10.0.0.77/32", "kube-ipvs0", "")
	m := newTest(t, k, "")
	for _, c := range []struct {
		vip  string
		want string
		err  error
	}{
		{"10.0.0.5", "eth0", nil},
		{"10.0.0.200", "eth1", nil},
		{"fd00::5", "eth1", nil},
		{"10.0.0.77", "eth0", nil}, // local elsewhere: the connected route decides
		{"192.0.2.1", "", ErrNoInterface},
		{"10.9.0.1", "", ErrNoInterface},
		{"fd01::1", "", ErrNoInterface},
		{"127.0.0.2", "", ErrInvalidAddress},
	} {
		got, err := m.InterfaceFor(netip.MustParseAddr(c.vip))
		if got != c.want || !errors.Is(err, c.err) {
			t.Errorf("%s: got %q, %v; want %q, %v", c.vip, got, err, c.want, c.err)
		}
	}
	if _, err := m.Add("o", netip.MustParseAddr("10.0.0.200"), "eth0"); err != nil {
		t.Fatal(err)
	}
	if got, err := m.InterfaceFor(netip.MustParseAddr("10.0.0.200")); got != "eth0" || err != nil {
		t.Errorf("held address: got %q, %v; want the interface it is held on", got, err)
	}
}
