package agent

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	announcefake "github.com/vip-lb/vip/pkg/announce/fake"
	"github.com/vip-lb/vip/pkg/dhcp"
	"github.com/vip-lb/vip/pkg/lbsvc"
)

// fixedElector answers every Ensure with the same decision.
type fixedElector struct{ d Decision }

func (e *fixedElector) AliveNodes() []string { return []string{"n1", "n2"} }
func (e *fixedElector) Alive(string) bool    { return true }
func (e *fixedElector) Fenced() bool         { return false }
func (e *fixedElector) Ensure(context.Context, string, string, string, []string) (Decision, error) {
	return e.d, nil
}
func (e *fixedElector) Release(context.Context, string, string, string) error { return nil }
func (e *fixedElector) Delete(context.Context, string, string) error          { return nil }
func (e *fixedElector) Holder(string, string) (string, bool)                  { return e.d.Holder, e.d.Holder != "" }

// recordingDHCP records Ensure and Stop and hands out a set lease.
type recordingDHCP struct {
	mu      sync.Mutex
	lease   *dhcp.Lease
	running map[string]dhcp.Params
	calls   []string
}

func (d *recordingDHCP) Ensure(key string, p dhcp.Params) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.running[key] = p
	d.calls = append(d.calls, "ensure "+key+" "+p.Parent+" want="+p.Want.String())
	return nil
}

func (d *recordingDHCP) Lease(key string) (dhcp.Lease, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.running[key]; !ok || d.lease == nil {
		return dhcp.Lease{}, false
	}
	return *d.lease, true
}

func (d *recordingDHCP) Running(key string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.running[key]
	return ok
}

func (d *recordingDHCP) Stop(key string, release bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.running, key)
	if release {
		d.calls = append(d.calls, "release "+key)
	} else {
		d.calls = append(d.calls, "stop "+key)
	}
}

func (d *recordingDHCP) take() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := d.calls
	d.calls = nil
	return out
}

// TestDHCPOwnerFlow drives sync for a 0.0.0.0 Service through the owner's
// steps: start the client, record the lease on the Service Lease, announce
// on the macvlan once status shows the address, stop without release when
// ownership goes, release when the Service goes.
func TestDHCPOwnerFlow(t *testing.T) {
	ctx := context.Background()
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", Annotations: map[string]string{lbsvc.AnnotationLoadBalancerIPs: "0.0.0.0"}},
		Spec:       v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer},
	}
	lease := &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "vip-dhcp-default-web", Namespace: "kube-system"}}
	client := fake.NewClientset(svc, lease)
	el := &fixedElector{d: Decision{Announce: true, Holder: "n1"}}
	dh := &recordingDHCP{running: map[string]dhcp.Params{}}
	ann := announcefake.New()
	a, err := New(Options{Client: client, NodeName: "n1", Mode: ModeARP, Announcer: ann, Elector: el, DHCP: dh,
		Interface: "eth0", Recorder: record.NewFakeRecorder(100)})
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	defer close(stop)
	a.factory.Start(stop)
	a.cmFactory.Start(stop)
	if !cache.WaitForCacheSync(stop, a.synced...) {
		t.Fatal("informers did not sync")
	}
	const key = "default/web"
	sync := func() {
		t.Helper()
		if err := a.sync(ctx, key); err != nil {
			t.Fatalf("sync: %v", err)
		}
	}

	// Owner without a lease yet: the client starts, nothing is announced.
	sync()
	if got := dh.take(); !slices.Equal(got, []string{"ensure default/web eth0 want=invalid IP"}) {
		t.Errorf("calls %q", got)
	}
	if len(ann.Held()) != 0 {
		t.Errorf("announced %v without a lease", ann.Held())
	}

	// Lease held: recorded on the Service Lease; status empty, so nothing
	// announced yet.
	vip := netip.MustParseAddr("10.77.0.150")
	dh.mu.Lock()
	dh.lease = &dhcp.Lease{Addr: vip, MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, Link: "vipd0123456789a",
		Times: dhcp.Times{Start: time.Now(), T1: time.Minute, T2: 2 * time.Minute, Lease: 4 * time.Minute}}
	dh.mu.Unlock()
	sync()
	got, err := client.CoordinationV1().Leases("kube-system").Get(ctx, "vip-dhcp-default-web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rec, ok, err := lbsvc.ParseDHCPRecord(got.Annotations)
	if !ok || err != nil || rec.Addr != vip || got.Labels[lbsvc.LabelDHCP] != "true" {
		t.Fatalf("Lease record %+v %v %v, labels %v", rec, ok, err, got.Labels)
	}
	if len(ann.Held()) != 0 {
		t.Errorf("announced %v before status shows it", ann.Held())
	}

	// Status shows the address (vip-ccm wrote it): announced on the macvlan.
	svc.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: vip.String()}}
	if _, err := client.CoreV1().Services("default").UpdateStatus(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { s, _ := a.svcs.Services("default").Get("web"); return len(lbsvc.IngressIPs(s)) == 1 })
	sync()
	calls := ann.Calls()
	if len(calls) != 1 || calls[0].Op != announcefake.OpAnnounce || calls[0].VIP != vip || calls[0].Iface != "vipd0123456789a" {
		t.Fatalf("announcer calls %v, want one announce of %s on the macvlan", calls, vip)
	}

	// Another node owns it now: withdrawn, client stopped without release.
	el.d = Decision{Holder: "n2"}
	sync()
	if len(ann.Held()) != 0 {
		t.Errorf("still announcing %v", ann.Held())
	}
	if got := dh.take(); !slices.Contains(got, "stop default/web") || slices.Contains(got, "release default/web") {
		t.Errorf("calls %q, want a stop without release", got)
	}

	// Owner again, then the Service is deleted: released.
	el.d = Decision{Announce: true, Holder: "n1"}
	sync()
	if err := client.CoreV1().Services("default").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, err := a.svcs.Services("default").Get("web"); return err != nil })
	sync()
	if got := dh.take(); !slices.Contains(got, "release default/web") {
		t.Errorf("calls %q, want a release", got)
	}
	if dh.Running(key) {
		t.Error("client still running after the Service went")
	}
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
