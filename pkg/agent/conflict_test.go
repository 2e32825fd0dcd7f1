package agent

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"

	"github.com/vip-lb/vip/pkg/lbsvc"
)

// fakeProber answers with mac and counts the probes.
type fakeProber struct {
	mu    sync.Mutex
	mac   net.HardwareAddr
	calls int
}

func (p *fakeProber) Probe(context.Context, netip.Addr, string) (net.HardwareAddr, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	return p.mac, nil
}

// TestProbeBeforeFirstAnnouncement: an address acquired fresh is probed; a
// foreign answer keeps it unannounced (Warning AddressInUse naming the MAC,
// conflict record for vip-ccm); once nobody answers it is announced. A
// takeover from another vip node is not probed.
func TestProbeBeforeFirstAnnouncement(t *testing.T) {
	vip := netip.MustParseAddr("10.7.0.20")
	el := &askingElector{d: Decision{Announce: true, Holder: "n1", Changed: true, Fresh: true}, alive: []string{"n1"}}
	a, client, ann := startTestAgent(t, ModeARP, el, sharedSvc("web", vip, false), readySlice("web", "n1"))
	foreign := net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 1}
	pr := &fakeProber{mac: foreign}
	a.o.Prober = pr
	rec := a.rec.(*record.FakeRecorder)
	ctx := context.Background()
	if err := syncAddrProbed(ctx, a, vip); err != nil {
		t.Fatal(err)
	}
	if len(ann.Held()) != 0 || pr.calls != 1 {
		t.Fatalf("in use: announced %v after %d probes", ann.Held(), pr.calls)
	}
	if !hasEvent(rec, "Warning "+ReasonAddressInUse) {
		t.Fatal("no AddressInUse Warning")
	}
	l, err := client.CoordinationV1().Leases("kube-system").Get(ctx, lbsvc.ConflictLeaseName(vip), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if l.Annotations[lbsvc.AnnotationMAC] != foreign.String() || l.Annotations[lbsvc.AnnotationAddress] != vip.String() ||
		l.Annotations[lbsvc.AnnotationNode] != "n1" || l.Spec.RenewTime == nil {
		t.Fatalf("conflict record %v %v", l.Annotations, l.Spec.RenewTime)
	}
	// Still held by this node, not fresh any more: probed again, and the
	// other host is gone now.
	el.d.Fresh = false
	pr.mac = nil
	if err := syncAddrProbed(ctx, a, vip); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ann.Held(), []netip.Addr{vip}) || pr.calls != 2 {
		t.Fatalf("free again: announced %v after %d probes", ann.Held(), pr.calls)
	}
	// Held: no more probes.
	if err := syncAddrProbed(ctx, a, vip); err != nil || pr.calls != 2 {
		t.Fatalf("held address probed again (%d probes, %v)", pr.calls, err)
	}

	// Announced after the probe: the Lease is marked (no Lease in this
	// test: the mark is attempted and the missing Lease ignored).

	// A takeover (not fresh) of an address a vip node announced (marked
	// Lease) announces at once, without a probe.
	vip2 := netip.MustParseAddr("10.7.0.21")
	putAddrLease(t, client, vip2, "n2", time.Now().Add(-time.Minute))
	if _, err := client.CoreV1().Services("team").Create(ctx, sharedSvc("other", vip2, false), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.DiscoveryV1().EndpointSlices("team").Create(ctx, readySlice("other", "n1"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { s := sharedSvcKey(a, "other"); return s != nil && len(a.readyEndpoints(s)) > 0 })
	pr.mac = foreign
	if err := syncAddrProbed(ctx, a, vip2); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(ann.Held(), vip2) || pr.calls != 2 {
		t.Fatalf("takeover: announced %v after %d probes, want announced without a probe", ann.Held(), pr.calls)
	}
}

// TestProbeAnsweredByNewHolder: two agents held a fresh Lease for a moment
// (another node took it over while this one acquired it and probed). The
// probe's answer is that vip node: this agent steps back without a Warning
// or a conflict record, so vip-ccm leaves the Service its address.
func TestProbeAnsweredByNewHolder(t *testing.T) {
	vip := netip.MustParseAddr("10.7.0.22")
	el := &askingElector{d: Decision{Announce: true, Holder: "n1", Changed: true, Fresh: true}, alive: []string{"n1", "n2"}}
	a, client, ann := startTestAgent(t, ModeARP, el, sharedSvc("web", vip, false), readySlice("web", "n1"))
	putAddrLease(t, client, vip, "n2", time.Time{}) // n2 took it over and announces it
	pr := &fakeProber{mac: net.HardwareAddr{0x02, 0, 0, 0, 0, 2}}
	a.o.Prober = pr
	rec := a.rec.(*record.FakeRecorder)
	ctx := context.Background()
	if err := syncAddrProbed(ctx, a, vip); err != nil {
		t.Fatal(err)
	}
	if len(ann.Held()) != 0 || pr.calls != 1 {
		t.Fatalf("announced %v after %d probes; want not announced after one probe", ann.Held(), pr.calls)
	}
	if hasEvent(rec, "Warning "+ReasonAddressInUse) {
		t.Fatal("AddressInUse Warning for the vip node holding the Lease")
	}
	if _, err := client.CoordinationV1().Leases("kube-system").Get(ctx, lbsvc.ConflictLeaseName(vip), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("conflict record: err %v; want none", err)
	}
}

// putAddrLease writes the per-address Lease of vip held by holder, marked
// announced at the given time (zero: no mark).
func putAddrLease(t *testing.T, client *fake.Clientset, vip netip.Addr, holder string, at time.Time) {
	t.Helper()
	l := &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: lbsvc.AddressLeaseName(vip), Namespace: "kube-system"},
		Spec: coordv1.LeaseSpec{HolderIdentity: &holder}}
	if !at.IsZero() {
		l.Annotations = map[string]string{AnnotationAnnouncedAt: at.UTC().Format(time.RFC3339Nano), AnnotationAnnouncedBy: holder}
	}
	if _, err := client.CoordinationV1().Leases("kube-system").Create(context.Background(), l, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// putConflict writes the conflict record of vip, renewed at the given time.
func putConflict(t *testing.T, client *fake.Clientset, vip netip.Addr, at time.Time) {
	t.Helper()
	rt := metav1.NewMicroTime(at)
	l := &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: lbsvc.ConflictLeaseName(vip), Namespace: "kube-system",
		Annotations: map[string]string{lbsvc.AnnotationAddress: vip.String(), lbsvc.AnnotationMAC: "02:aa:00:00:00:09"}},
		Spec: coordv1.LeaseSpec{RenewTime: &rt}}
	if _, err := client.CoordinationV1().Leases("kube-system").Create(context.Background(), l, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestProbeAfterRestart: an agent process that does not announce an
// address yet, although its node holds the address's Lease (a restart, or
// a takeover), probes it first unless a vip node announced it after the
// last conflict record: held-but-never-announced and a newer conflict
// record both force a probe; a clean probe marks the Lease, so the next
// restart does not probe.
func TestProbeAfterRestart(t *testing.T) {
	for _, cached := range []bool{false, true} {
		name := "API"
		if cached {
			name = "elector cache"
		}
		t.Run(name, func(t *testing.T) { testProbeAfterRestart(t, cached) })
	}
}

// cachingElector offers the elector's Lease cache (read here from the
// fake API server) and counts the reads.
type cachingElector struct {
	*askingElector
	client *fake.Clientset
	reads  atomic.Int32
}

func (e *cachingElector) Lease(ns, name string) (*coordv1.Lease, bool) {
	e.reads.Add(1)
	l, err := e.client.CoordinationV1().Leases(ns).Get(context.Background(), name, metav1.GetOptions{})
	return l, err == nil
}

func testProbeAfterRestart(t *testing.T, cached bool) {
	now := time.Now()
	for _, tc := range []struct {
		name      string
		announced time.Time // zero: the Lease carries no mark
		conflict  time.Time // zero: no conflict record
		noLease   bool
		answer    bool // another host answers the probe
		wantProbe bool
	}{
		{name: "never announced, in use", answer: true, wantProbe: true},
		{name: "never announced, free", wantProbe: true},
		{name: "announced, no conflict record", announced: now.Add(-time.Minute)},
		{name: "announced after the conflict", announced: now.Add(-time.Minute), conflict: now.Add(-2 * time.Minute)},
		{name: "conflict after the announcement, in use", announced: now.Add(-2 * time.Minute), conflict: now.Add(-time.Minute), answer: true, wantProbe: true},
		{name: "conflict record, never announced", conflict: now.Add(-time.Hour), answer: true, wantProbe: true},
		{name: "no Lease", noLease: true, wantProbe: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vip := netip.MustParseAddr("10.7.0.30")
			// Holding the Lease already (not fresh), as after a restart.
			asking := &askingElector{d: Decision{Announce: true, Holder: "n1"}, alive: []string{"n1"}}
			var el Elector = asking
			ce := &cachingElector{askingElector: asking}
			if cached {
				el = ce
			}
			a, client, ann := startTestAgent(t, ModeARP, el, sharedSvc("web", vip, false), readySlice("web", "n1"))
			ce.client = client
			pr := &fakeProber{}
			if tc.answer {
				pr.mac = net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 9}
			}
			a.o.Prober = pr
			if !tc.noLease {
				putAddrLease(t, client, vip, "n1", tc.announced)
			}
			if !tc.conflict.IsZero() {
				putConflict(t, client, vip, tc.conflict)
			}
			ctx := context.Background()
			if err := syncAddrProbed(ctx, a, vip); err != nil {
				t.Fatal(err)
			}
			if got := pr.calls == 1; got != tc.wantProbe {
				t.Fatalf("probed %d times, want probe %v", pr.calls, tc.wantProbe)
			}
			if cached && ce.reads.Load() == 0 {
				t.Fatal("the elector's Lease cache was not used")
			}
			announced := slices.Contains(ann.Held(), vip)
			if announced == tc.answer {
				t.Fatalf("announced %v with another host answering %v", announced, tc.answer)
			}
			if tc.answer || tc.noLease {
				return
			}
			l, err := client.CoordinationV1().Leases("kube-system").Get(ctx, lbsvc.AddressLeaseName(vip), metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			at, err := time.Parse(time.RFC3339Nano, l.Annotations[AnnotationAnnouncedAt])
			if err != nil {
				t.Fatalf("Lease not marked announced: %v", l.Annotations)
			}
			if tc.wantProbe && (at.Before(now) || l.Annotations[AnnotationAnnouncedBy] != "n1") {
				t.Fatalf("probed and announced, but the mark is %v", l.Annotations)
			}
			if !tc.wantProbe && !at.Before(now) {
				t.Fatalf("announced without a probe, but the mark was rewritten: %v", l.Annotations)
			}
			// The next restart (a new agent process) does not probe again.
			b, _, ann2 := restartTestAgent(t, ModeARP, client, el)
			b.o.Prober = pr
			if err := syncAddrProbed(ctx, b, vip); err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(ann2.Held(), vip) || pr.calls > 1 {
				t.Fatalf("after a restart: announced %v after %d probes in all, want announced without another", ann2.Held(), pr.calls)
			}
		})
	}
}

// TestProbeAnsweredByVipNode: a takeover of an address whose Lease was
// never marked announced (the former holder's mark write failed) probes,
// and the former holder's interface still answers (its agent was killed,
// the address stayed bound). That MAC is a vip node's: the address is
// announced, with no Warning and no conflict record, so vip-ccm leaves the
// Service its address; a foreign MAC still counts as a conflict.
func TestProbeAnsweredByVipNode(t *testing.T) {
	vip := netip.MustParseAddr("10.7.0.23")
	el := &askingElector{d: Decision{Announce: true, Holder: "n1", Changed: true}, alive: []string{"n1"}}
	a, client, ann := startTestAgent(t, ModeARP, el, sharedSvc("web", vip, false), readySlice("web", "n1"))
	putAddrLease(t, client, vip, "n1", time.Time{}) // taken over from n2, never marked
	n2 := net.HardwareAddr{0x02, 0, 0x0a, 0, 0, 0x0d}
	a.o.NodeWithMAC = func(mac net.HardwareAddr) string {
		if mac.String() == n2.String() {
			return "n2"
		}
		return ""
	}
	pr := &fakeProber{mac: n2}
	a.o.Prober = pr
	rec := a.rec.(*record.FakeRecorder)
	ctx := context.Background()
	if err := syncAddrProbed(ctx, a, vip); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ann.Held(), []netip.Addr{vip}) || pr.calls != 1 {
		t.Fatalf("answered by vip node n2: announced %v after %d probes; want announced after one", ann.Held(), pr.calls)
	}
	if hasEvent(rec, "Warning "+ReasonAddressInUse) {
		t.Fatal("AddressInUse Warning for a vip node's MAC")
	}
	if _, err := client.CoordinationV1().Leases("kube-system").Get(ctx, lbsvc.ConflictLeaseName(vip), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("conflict record: err %v; want none", err)
	}
	l, err := client.CoordinationV1().Leases("kube-system").Get(ctx, lbsvc.AddressLeaseName(vip), metav1.GetOptions{})
	if err != nil || l.Annotations[AnnotationAnnouncedBy] != "n1" {
		t.Fatalf("address Lease after the announcement: %v, %v; want marked by n1", l, err)
	}
}

// TestMarkRetried: when the announced mark cannot be written (API server
// down), the reconcile fails and the next one writes it, so the next owner
// does not need to probe an address this node still answers for.
func TestMarkRetried(t *testing.T) {
	vip := netip.MustParseAddr("10.7.0.24")
	el := &askingElector{d: Decision{Announce: true, Holder: "n1", Changed: true, Fresh: true}, alive: []string{"n1"}}
	a, client, ann := startTestAgent(t, ModeARP, el, sharedSvc("web", vip, false), readySlice("web", "n1"))
	putAddrLease(t, client, vip, "n1", time.Time{})
	a.o.Prober = &fakeProber{}
	var fail atomic.Bool
	fail.Store(true)
	client.PrependReactor("patch", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		if fail.Load() {
			return true, nil, apierrors.NewServiceUnavailable("API server down")
		}
		return false, nil, nil
	})
	ctx := context.Background()
	if err := syncAddrProbed(ctx, a, vip); err == nil {
		t.Fatal("mark failed, but the reconcile reported success (it would not be retried)")
	}
	if !slices.Equal(ann.Held(), []netip.Addr{vip}) {
		t.Fatalf("announced %v; the failed mark must not hold the address back", ann.Held())
	}
	fail.Store(false)
	el.d.Fresh, el.d.Changed = false, false
	if err := syncAddrProbed(ctx, a, vip); err != nil {
		t.Fatal(err)
	}
	l, err := client.CoordinationV1().Leases("kube-system").Get(ctx, lbsvc.AddressLeaseName(vip), metav1.GetOptions{})
	if err != nil || l.Annotations[AnnotationAnnouncedBy] != "n1" || l.Annotations[AnnotationAnnouncedAt] == "" {
		t.Fatalf("address Lease after the retry: %v, %v; want marked by n1", l, err)
	}
}
