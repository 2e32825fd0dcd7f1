package announce

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/vip-lb/vip/pkg/announce/internal/testconn"
)

// fakeBinder is an in-memory binder.
type fakeBinder struct {
	mu        sync.Mutex
	owners    map[netip.Addr]map[string]bool
	iface     map[netip.Addr]string
	failAdd   error
	cleanups  int
	removeAll int
	closed    bool
}

func newFakeBinder() *fakeBinder {
	return &fakeBinder{owners: map[netip.Addr]map[string]bool{}, iface: map[netip.Addr]string{}}
}

func (b *fakeBinder) Add(owner string, vip netip.Addr, iface string) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failAdd != nil {
		return false, b.failAdd
	}
	if o, ok := b.owners[vip]; ok {
		if iface != "" && b.iface[vip] != iface {
			return false, ErrInterfaceConflict
		}
		o[owner] = true
		return false, nil
	}
	if iface == "" {
		var err error
		if iface, err = b.interfaceFor(vip); err != nil {
			return false, err
		}
	}
	b.owners[vip] = map[string]bool{owner: true}
	b.iface[vip] = iface
	return true, nil
}

func (b *fakeBinder) Remove(owner string, vip netip.Addr) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	o, ok := b.owners[vip]
	if !ok || !o[owner] {
		return false, nil
	}
	delete(o, owner)
	if len(o) > 0 {
		return false, nil
	}
	delete(b.owners, vip)
	delete(b.iface, vip)
	return true, nil
}

func (b *fakeBinder) interfaceFor(vip netip.Addr) (string, error) {
	if vip.Is4() && vip.As4()[0] == 10 {
		return "eth0", nil
	}
	if vip.Is6() {
		return "eth0", nil
	}
	return "", ErrNoInterface
}

func (b *fakeBinder) Interface(vip netip.Addr) (string, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	i, ok := b.iface[vip]
	return i, ok
}

func (b *fakeBinder) HasOwner(owner string, vip netip.Addr) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.owners[vip][owner]
}

func (b *fakeBinder) Held() []netip.Addr {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []netip.Addr
	for a := range b.owners {
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func (b *fakeBinder) Len() int { return len(b.Held()) }

func (b *fakeBinder) Cleanup(context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cleanups++
	return nil
}

func (b *fakeBinder) RemoveAll(context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.removeAll++
	b.owners = map[netip.Addr]map[string]bool{}
	b.iface = map[netip.Addr]string{}
	return nil
}

func (b *fakeBinder) Close() error {
	b.closed = true
	return nil
}

var (
	mac  = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xaa}
	vip4 = netip.MustParseAddr("10.1.0.10")
	vip6 = netip.MustParseAddr("fd00:1::10")
)

type harness struct {
	l        *Layer2
	b        *fakeBinder
	pc       *testconn.Conn
	reg      *prometheus.Registry
	clk      *clocktesting.FakeClock
	interval time.Duration
}

// round lets the next pending round go (the fake clock moves by the
// interval once a burst waits for it) and waits for the frames to total want.
func (h *harness) round(t *testing.T, want int) {
	t.Helper()
	waitCond(t, "a burst waiting for its next round", h.clk.HasWaiters)
	h.clk.Step(h.interval)
	if got := len(h.pc.WaitFrames(want, time.Minute)); got != want {
		t.Fatalf("%d frames, want %d", got, want)
	}
}

// idle waits until no burst waits for a round any more.
func (h *harness) idle(t *testing.T) {
	t.Helper()
	waitCond(t, "the bursts to end", func() bool { return !h.clk.HasWaiters() })
}

// waitCond polls cond with a generous deadline (an eventual condition,
// not a timing limit).
func waitCond(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: gave up", what)
		}
	}
}

func newHarness(t *testing.T, interval time.Duration) *harness {
	t.Helper()
	h := &harness{b: newFakeBinder(), pc: testconn.New(), reg: prometheus.NewRegistry(),
		clk: clocktesting.NewFakeClock(time.Unix(0, 0)), interval: interval}
	l, err := newLayer2(Options{
		Registerer: h.reg,
		Interval:   interval,
		Clock:      h.clk,
		Interface: func(name string) (*net.Interface, error) {
			return &net.Interface{Index: 2, Name: name, HardwareAddr: mac}, nil
		},
		// Both senders share one recording conn.
		Listen: func(*net.Interface) (net.PacketConn, error) { return nopClose{h.pc}, nil },
	}, h.b)
	if err != nil {
		t.Fatal(err)
	}
	h.l = l
	t.Cleanup(func() { _ = l.Close() })
	return h
}

// nopClose keeps the shared conn open when one sender closes it.
type nopClose struct{ *testconn.Conn }

func (nopClose) Close() error { return nil }

// metric returns the value of the series name with the given label, or of
// the only series when label is empty.
func (h *harness) metric(t *testing.T, name, label string) float64 {
	t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label != "" && (len(m.GetLabel()) == 0 || m.GetLabel()[0].GetValue() != label) {
				continue
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

func TestAnnounceBurstsOncePerOwner(t *testing.T) {
	h := newHarness(t, 50*time.Millisecond)
	ctx := context.Background()
	if err := h.l.Announce(ctx, "a", vip4, ""); err != nil {
		t.Fatal(err)
	}
	if got := len(h.pc.Frames()); got != 2 {
		t.Fatalf("first round: %d frames, want 2 (GARP request + reply)", got)
	}
	h.round(t, 4)
	h.round(t, 6)
	h.idle(t)
	// Same owner again: level-triggered callers repeat themselves. A burst
	// writes its first round before Announce returns: none came.
	if err := h.l.Announce(ctx, "a", vip4, ""); err != nil {
		t.Fatal(err)
	}
	if got := len(h.pc.Frames()); got != 6 {
		t.Fatalf("repeat Announce sent frames: %d", got)
	}
	// A new owner of a shared address announces again.
	if err := h.l.Announce(ctx, "b", vip4, "eth0"); err != nil {
		t.Fatal(err)
	}
	if got := len(h.pc.Frames()); got != 8 {
		t.Fatalf("second owner: %d frames, want 8 (its first round)", got)
	}
	h.round(t, 10)
	h.round(t, 12)
	// The counter moves just after each frame is written: wait for it too.
	var sent float64
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if sent = h.metric(t, "vip_agent_announcement_frames_sent_total", "ipv4"); sent == 12 {
			break
		}
	}
	if sent != 12 {
		t.Errorf("vip_agent_announcement_frames_sent_total{ipv4} = %v, want 12", sent)
	}
	if got := h.metric(t, "vip_agent_addresses_bound", ""); got != 1 {
		t.Errorf("vip_agent_addresses_bound = %v, want 1", got)
	}
	if got := h.l.Held(); !slices.Equal(got, []netip.Addr{vip4}) {
		t.Errorf("Held %v", got)
	}
}

func TestWithdrawStopsBurst(t *testing.T) {
	h := newHarness(t, 30*time.Millisecond)
	ctx := context.Background()
	for _, o := range []string{"a", "b"} {
		if err := h.l.Announce(ctx, o, vip6, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.l.Withdraw(ctx, "a", vip6); err != nil {
		t.Fatal(err)
	}
	if got := h.l.Held(); len(got) != 1 {
		t.Fatalf("address went with an owner left: %v", got)
	}
	if err := h.l.Withdraw(ctx, "b", vip6); err != nil {
		t.Fatal(err)
	}
	// The clock never moved: only the first rounds were written, and the
	// bursts left without writing the rest, even once the rounds are due.
	h.idle(t)
	n := len(h.pc.Frames())
	h.clk.Step(time.Minute)
	if got := len(h.pc.Frames()); got != n {
		t.Errorf("%d frames after the last owner withdrew", got-n)
	}
	if got := h.l.Held(); len(got) != 0 {
		t.Errorf("Held %v", got)
	}
	if err := h.l.Withdraw(ctx, "b", vip6); err != nil {
		t.Errorf("withdrawing twice: %v", err)
	}
	if got := h.metric(t, "vip_agent_announcement_frames_sent_total", "ipv6"); got != float64(n) {
		t.Errorf("vip_agent_announcement_frames_sent_total{ipv6} = %v, want %d", got, n)
	}
}

func TestAnnounceOutlivesCallContext(t *testing.T) {
	h := newHarness(t, 10*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	if err := h.l.Announce(ctx, "a", vip4, ""); err != nil {
		t.Fatal(err)
	}
	cancel() // a per-call deadline must not cut the burst short
	h.round(t, 4)
	h.round(t, 6)
}

func TestFailedAnnounceRollsBack(t *testing.T) {
	h := newHarness(t, 10*time.Millisecond)
	ctx := context.Background()
	if err := h.l.Announce(ctx, "shared", vip6, ""); err != nil {
		t.Fatal(err)
	}
	h.pc.FailWith(syscall.ENETDOWN)
	if err := h.l.Announce(ctx, "a", vip4, ""); !errors.Is(err, syscall.ENETDOWN) {
		t.Fatalf("got %v, want ENETDOWN", err)
	}
	if err := h.l.Announce(ctx, "a", vip6, ""); !errors.Is(err, syscall.ENETDOWN) {
		t.Fatalf("got %v, want ENETDOWN", err)
	}
	// A failed Announce changes nothing for its owner.
	if got := h.l.Held(); !slices.Equal(got, []netip.Addr{vip6}) {
		t.Fatalf("Held %v after failed announcements, want only %s", got, vip6)
	}
	if h.b.HasOwner("a", vip6) {
		t.Fatal("failed owner kept on a shared address")
	}
	h.pc.FailWith(nil)
	if err := h.l.Announce(ctx, "a", vip4, ""); err != nil {
		t.Fatal(err)
	}
	if got := len(h.pc.Frames()); got < 2 {
		t.Fatalf("retry sent %d frames", got)
	}
	if got := h.metric(t, "vip_agent_announce_errors_total", OpAnnounce); got != 2 {
		t.Errorf("vip_agent_announce_errors_total{announce} = %v, want 2", got)
	}
}

func TestAnnounceErrors(t *testing.T) {
	h := newHarness(t, 0)
	ctx := context.Background()
	if err := h.l.Announce(ctx, "a", netip.MustParseAddr("192.0.2.1"), ""); !errors.Is(err, ErrNoInterface) {
		t.Errorf("got %v, want ErrNoInterface", err)
	}
	h.b.failAdd = ErrForeignAddress
	if err := h.l.Announce(ctx, "a", vip4, "eth0"); !errors.Is(err, ErrForeignAddress) {
		t.Errorf("got %v, want ErrForeignAddress", err)
	}
	if got := len(h.pc.Frames()); got != 0 {
		t.Errorf("announced a foreign address: %d frames", got)
	}
	if err := h.l.Refresh(ctx, vip4); !errors.Is(err, ErrNotHeld) {
		t.Errorf("Refresh: got %v, want ErrNotHeld", err)
	}
	if got := h.metric(t, "vip_agent_announce_errors_total", OpAnnounce); got != 2 {
		t.Errorf("vip_agent_announce_errors_total{announce} = %v, want 2", got)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := h.l.Announce(cctx, "a", vip4, "eth0"); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: got %v", err)
	}
}

func TestRefresh(t *testing.T) {
	h := newHarness(t, 50*time.Millisecond)
	ctx := context.Background()
	if err := h.l.Announce(ctx, "a", vip4, ""); err != nil {
		t.Fatal(err)
	}
	if err := h.l.Refresh(ctx, vip4); err != nil {
		t.Fatal(err)
	}
	// The refresh replaced the pending rounds: 1 + 3 rounds of 2 frames.
	if got := len(h.pc.Frames()); got != 4 {
		t.Fatalf("%d frames after Refresh, want 4", got)
	}
	h.round(t, 6)
	h.round(t, 8)
	h.idle(t)
	h.clk.Step(time.Minute)
	if got := len(h.pc.Frames()); got != 8 {
		t.Errorf("%d frames, want 8", got)
	}
}

func TestCloseRemovesEverything(t *testing.T) {
	h := newHarness(t, 20*time.Millisecond)
	ctx := context.Background()
	if err := h.l.Announce(ctx, "a", vip4, ""); err != nil {
		t.Fatal(err)
	}
	if err := h.l.Cleanup(ctx); err != nil || h.b.cleanups != 1 {
		t.Fatalf("Cleanup: %v, %d calls", err, h.b.cleanups)
	}
	if err := h.l.Close(); err != nil {
		t.Fatal(err)
	}
	// Close waited for the bursts: no round is written after it, even once
	// the rounds are due.
	n := len(h.pc.Frames())
	h.clk.Step(time.Minute)
	if got := len(h.pc.Frames()); got != n {
		t.Error("frames after Close")
	}
	if h.b.removeAll != 1 || !h.b.closed || len(h.l.Held()) != 0 {
		t.Errorf("Close: RemoveAll %d, binder closed %v, held %v", h.b.removeAll, h.b.closed, h.l.Held())
	}
	if err := h.l.Announce(ctx, "a", vip4, ""); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: got %v, want ErrClosed", err)
	}
	if err := h.l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestMetricsRegistration(t *testing.T) {
	reg := prometheus.NewRegistry()
	l, err := newLayer2(Options{Registerer: reg}, newFakeBinder())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := newLayer2(Options{Registerer: reg}, newFakeBinder()); err == nil {
		t.Fatal("registering twice on one registry succeeded")
	}
	l2, err := newLayer2(Options{}, newFakeBinder())
	if err != nil {
		t.Fatalf("nil Registerer: %v", err)
	}
	defer l2.Close()
}

func TestConcurrentOwners(t *testing.T) {
	h := newHarness(t, time.Millisecond)
	ctx := context.Background()
	vips := []netip.Addr{vip4, vip6, netip.MustParseAddr("10.1.0.11"), netip.MustParseAddr("10.1.0.12")}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			owner := string(rune('a' + w))
			for i := range 200 {
				v := vips[(w+i)%len(vips)]
				if err := h.l.Announce(ctx, owner, v, ""); err != nil {
					t.Error(err)
					return
				}
				if i%3 != 0 {
					if err := h.l.Withdraw(ctx, owner, v); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	// Whatever is held must have owners, and what has owners must be held.
	held := h.l.Held()
	for _, v := range vips {
		hasOwners := len(h.b.owners[v]) > 0
		if slices.Contains(held, v) != hasOwners {
			t.Errorf("%s: held %v, owners %v", v, slices.Contains(held, v), h.b.owners[v])
		}
	}
	if err := h.l.Close(); err != nil {
		t.Fatal(err)
	}
	h.l.mu.Lock()
	defer h.l.mu.Unlock()
	for v, st := range h.l.vips {
		if st.users != 0 {
			t.Errorf("%s: %d users after Close", v, st.users)
		}
	}
}

// slowBinder delays Add so Close can race with it.
type slowBinder struct {
	*fakeBinder
	entered chan struct{}
	release chan struct{}
}

func (s *slowBinder) Add(owner string, vip netip.Addr, iface string) (bool, error) {
	close(s.entered)
	<-s.release
	return s.fakeBinder.Add(owner, vip, iface)
}

func TestCloseWaitsForAnnounce(t *testing.T) {
	b := &slowBinder{fakeBinder: newFakeBinder(), entered: make(chan struct{}), release: make(chan struct{})}
	l, err := newLayer2(Options{
		Interface: func(name string) (*net.Interface, error) {
			return &net.Interface{Index: 2, Name: name, HardwareAddr: mac}, nil
		},
		Listen: func(*net.Interface) (net.PacketConn, error) { return testconn.New(), nil },
	}, b)
	if err != nil {
		t.Fatal(err)
	}
	announced := make(chan error)
	go func() { announced <- l.Announce(context.Background(), "a", vip4, "") }()
	<-b.entered
	// Close waits for the Announce: were it not to, the address bound
	// after it would survive (checked below).
	closed := make(chan error)
	go func() { closed <- l.Close() }()
	close(b.release)
	if err := <-announced; err != nil {
		t.Fatal(err)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if len(b.Held()) != 0 {
		t.Errorf("address bound during Close survived: %v", b.Held())
	}
}
