package agent

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	if err := a.syncAddr(ctx, vip); err != nil {
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
	if err := a.syncAddr(ctx, vip); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ann.Held(), []netip.Addr{vip}) || pr.calls != 2 {
		t.Fatalf("free again: announced %v after %d probes", ann.Held(), pr.calls)
	}
	// Held: no more probes.
	if err := a.syncAddr(ctx, vip); err != nil || pr.calls != 2 {
		t.Fatalf("held address probed again (%d probes, %v)", pr.calls, err)
	}

	// A takeover (not fresh) announces at once, without a probe.
	vip2 := netip.MustParseAddr("10.7.0.21")
	if _, err := client.CoreV1().Services("team").Create(ctx, sharedSvc("other", vip2, false), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.DiscoveryV1().EndpointSlices("team").Create(ctx, readySlice("other", "n1"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { s := sharedSvcKey(a, "other"); return s != nil && len(a.readyEndpoints(s)) > 0 })
	pr.mac = foreign
	if err := a.syncAddr(ctx, vip2); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(ann.Held(), vip2) || pr.calls != 2 {
		t.Fatalf("takeover: announced %v after %d probes, want announced without a probe", ann.Held(), pr.calls)
	}
}
