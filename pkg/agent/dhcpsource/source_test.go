package dhcpsource

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	coordv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"

	"github.com/vip-lb/vip/pkg/agent"
	"github.com/vip-lb/vip/pkg/dhcp"
	"github.com/vip-lb/vip/pkg/ipam"
	"github.com/vip-lb/vip/pkg/lbsvc"
)

// recordingClients records Ensure and Stop and hands out a set lease.
type recordingClients struct {
	mu      sync.Mutex
	lease   *dhcp.Lease
	limit   bool
	running map[string]dhcp.Params
	calls   []string
}

func (d *recordingClients) Ensure(key string, p dhcp.Params) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, "ensure "+key+" "+p.Parent+" want="+p.Want.String())
	if d.limit {
		return dhcp.ErrLimit
	}
	d.running[key] = p
	return nil
}

func (d *recordingClients) Lease(key string) (dhcp.Lease, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.running[key]; !ok || d.lease == nil {
		return dhcp.Lease{}, false
	}
	return *d.lease, true
}

func (d *recordingClients) Running(key string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.running[key]
	return ok
}

func (d *recordingClients) Stop(key string, release bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.running, key)
	if release {
		d.calls = append(d.calls, "release "+key)
	} else {
		d.calls = append(d.calls, "stop "+key)
	}
}

func (d *recordingClients) take() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := d.calls
	d.calls = nil
	return out
}

func events(rec *record.FakeRecorder) []string {
	var out []string
	for {
		select {
		case e := <-rec.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func dhcpSvc() *v1.Service {
	return &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", Annotations: map[string]string{lbsvc.AnnotationLoadBalancerIPs: "0.0.0.0"}},
		Spec:       v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer},
	}
}

// TestOwnerFlow drives the source through the owner's steps: start the
// client, record the lease on the Service Lease and supply it, stop without
// release when ownership goes, release when the Service goes.
func TestOwnerFlow(t *testing.T) {
	ctx := context.Background()
	svc := dhcpSvc()
	lease := &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "vip-dhcp-default-web", Namespace: "kube-system"}}
	client := fake.NewClientset(lease)
	dh := &recordingClients{running: map[string]dhcp.Params{}}
	rec := record.NewFakeRecorder(16)
	s := New(Options{Client: client, Clients: dh, NodeName: "n1", Recorder: rec, Logger: logr.Discard()})
	if !s.Claims(svc, nil) || s.Claims(&v1.Service{Spec: v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer}}, &ipam.Config{}) {
		t.Fatal("Claims does not follow lbsvc.UsesDHCP")
	}
	if got := s.LeaseName(svc); got != "vip-dhcp-default-web" {
		t.Fatalf("LeaseName %q", got)
	}
	const key = "default/web"
	req := agent.SourceRequest{Key: key, Service: svc, Interface: "eth0", Namespace: "kube-system", Lease: "vip-dhcp-default-web"}

	// Owner without a lease yet: the client starts, nothing is supplied.
	got, err := s.Acquire(ctx, req)
	if err != nil || got.Addr.IsValid() || got.Withdraw != "no DHCP lease" {
		t.Fatalf("Acquire = %+v, %v", got, err)
	}
	if c := dh.take(); !slices.Equal(c, []string{"ensure default/web eth0 want=invalid IP"}) {
		t.Errorf("calls %q", c)
	}

	// Lease held: recorded on the Service Lease and supplied on the macvlan;
	// the address in status is what the client asks for again.
	vip := netip.MustParseAddr("10.77.0.150")
	dh.mu.Lock()
	dh.lease = &dhcp.Lease{Addr: vip, MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, Link: "vipd0123456789a",
		Times: dhcp.Times{Start: time.Now(), T1: time.Minute, T2: 2 * time.Minute, Lease: 4 * time.Minute}}
	dh.mu.Unlock()
	req.Status = []netip.Addr{netip.MustParseAddr("fd00::1"), vip}
	got, err = s.Acquire(ctx, req)
	if err != nil || got.Addr != vip || got.Interface != "vipd0123456789a" {
		t.Fatalf("Acquire = %+v, %v", got, err)
	}
	if c := dh.take(); !slices.Equal(c, []string{"ensure default/web eth0 want=10.77.0.150"}) {
		t.Errorf("calls %q", c)
	}
	l, err := client.CoordinationV1().Leases("kube-system").Get(ctx, "vip-dhcp-default-web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r, ok, err := lbsvc.ParseDHCPRecord(l.Annotations)
	if !ok || err != nil || r.Addr != vip || l.Labels[lbsvc.LabelDHCP] != "true" {
		t.Fatalf("Lease record %+v %v %v, labels %v", r, ok, err, l.Labels)
	}

	// Another node owns it now: stopped without release.
	s.Release(key, false)
	if c := dh.take(); !slices.Equal(c, []string{"stop default/web"}) {
		t.Errorf("calls %q, want a stop without release", c)
	}
	// Owner again, then the Service is gone: released.
	if _, err := s.Acquire(ctx, req); err != nil {
		t.Fatal(err)
	}
	s.Release(key, true)
	if c := dh.take(); !slices.Contains(c, "release default/web") || dh.Running(key) {
		t.Errorf("calls %q, want a release", c)
	}
	// Nothing runs: Release does nothing.
	s.Release(key, true)
	if c := dh.take(); len(c) != 0 {
		t.Errorf("calls %q after the client stopped", c)
	}
	if ev := events(rec); len(ev) != 0 {
		t.Errorf("events %q", ev)
	}
}

// TestAcquireProblems: no interface is a Warning and leaves what is
// announced as it is; the node's cap is a Warning and a withdrawal.
func TestAcquireProblems(t *testing.T) {
	ctx := context.Background()
	rec := record.NewFakeRecorder(16)
	dh := &recordingClients{running: map[string]dhcp.Params{}}
	s := New(Options{Client: fake.NewClientset(), Clients: dh, NodeName: "n1", Recorder: rec, Logger: logr.Discard()})
	req := agent.SourceRequest{Key: "default/web", Service: dhcpSvc(), Namespace: "kube-system", Lease: "vip-dhcp-default-web"}
	got, err := s.Acquire(ctx, req)
	if err != nil || got != (agent.Supplied{}) || len(dh.take()) != 0 {
		t.Fatalf("no interface: %+v, %v", got, err)
	}
	if ev := events(rec); len(ev) != 1 || !strings.HasPrefix(ev[0], "Warning "+ReasonDHCPNoIface) {
		t.Fatalf("events %q", ev)
	}
	dh.limit = true
	req.Interface = "eth0"
	got, err = s.Acquire(ctx, req)
	if err != nil || got.Addr.IsValid() || got.Withdraw != "DHCP interface cap reached" {
		t.Fatalf("cap: %+v, %v", got, err)
	}
	if ev := events(rec); len(ev) != 1 || !strings.HasPrefix(ev[0], "Warning "+ReasonDHCPLimit) || !strings.Contains(ev[0], "n1") {
		t.Fatalf("events %q", ev)
	}
}

// TestOnEvent: lease events are Events on the Service (failures the first
// and every tenth time) and always a reconcile.
func TestOnEvent(t *testing.T) {
	rec := record.NewFakeRecorder(16)
	var queued []string
	svc := dhcpSvc()
	s := New(Options{Clients: &recordingClients{}, NodeName: "n1", Recorder: rec, Logger: logr.Discard(),
		Service: func(key string) *v1.Service {
			if key == "default/web" {
				return svc
			}
			return nil
		},
		Enqueue: func(key string) { queued = append(queued, key) }})
	l := dhcp.Lease{Addr: netip.MustParseAddr("10.77.0.150"), Link: "vipd0", Times: dhcp.Times{Start: time.Now(), Lease: time.Minute}}
	s.OnEvent("default/web", dhcp.Event{Kind: dhcp.Obtained, Lease: l})
	for i := 1; i <= 10; i++ {
		s.OnEvent("default/web", dhcp.Event{Kind: dhcp.Failed, Failures: i, Lease: l})
	}
	s.OnEvent("default/web", dhcp.Event{Kind: dhcp.Lost})
	s.OnEvent("default/gone", dhcp.Event{Kind: dhcp.Lost})
	var reasons []string
	for _, e := range events(rec) {
		reasons = append(reasons, strings.Fields(e)[1])
	}
	want := []string{ReasonDHCPObtained, ReasonDHCPFailed, ReasonDHCPFailed, ReasonDHCPLost}
	if !slices.Equal(reasons, want) {
		t.Fatalf("reasons %q, want %q", reasons, want)
	}
	if len(queued) != 13 || queued[12] != "default/gone" {
		t.Fatalf("queued %q", queued)
	}
}
