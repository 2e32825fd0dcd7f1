package dhcpsource

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/go-logr/logr"
	coordv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"

	"github.com/vip-lb/vip/pkg/agent"
	announcefake "github.com/vip-lb/vip/pkg/announce/fake"
	"github.com/vip-lb/vip/pkg/dhcp"
	"github.com/vip-lb/vip/pkg/lbsvc"
)

// ownerElector elects this node for every Lease.
type ownerElector struct{}

func (ownerElector) AliveNodes() []string { return []string{"n1"} }
func (ownerElector) Alive(string) bool    { return true }
func (ownerElector) Fenced() bool         { return false }
func (ownerElector) Ensure(context.Context, string, string, string, []string) (agent.Decision, error) {
	return agent.Decision{Announce: true, Holder: "n1"}, nil
}
func (ownerElector) Release(context.Context, string, string, string) error { return nil }
func (ownerElector) Delete(context.Context, string, string) error          { return nil }
func (ownerElector) Holder(string, string) (string, bool)                  { return "n1", true }

// TestPluggedIntoTheAgent runs a real agent with the source plugged in as
// internal/agentapp wires it: a 0.0.0.0 Service gets a client on the
// announcing interface, its lease is recorded on the Service Lease, the
// address is announced on the macvlan once status shows it, and deleting
// the Service gives the lease back.
func TestPluggedIntoTheAgent(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	svc := dhcpSvc()
	client := fake.NewClientset(svc, &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "vip-dhcp-default-web", Namespace: "kube-system"}})
	vip := netip.MustParseAddr("10.77.0.150")
	dh := &recordingClients{running: map[string]dhcp.Params{}, lease: &dhcp.Lease{Addr: vip, MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1},
		Link: "vipd0123456789a", Times: dhcp.Times{Start: time.Now(), T1: time.Minute, T2: 2 * time.Minute, Lease: 4 * time.Minute}}}
	rec := record.NewFakeRecorder(100)
	var ag *agent.Agent
	src := New(Options{Client: client, Clients: dh, NodeName: "n1", Recorder: rec, Logger: logr.Discard(),
		Service: func(key string) *v1.Service { return ag.Service(key) }, Enqueue: func(key string) { ag.Enqueue(key) }})
	ann := announcefake.New()
	ag, err := agent.New(agent.Options{Client: client, NodeName: "n1", Mode: agent.ModeARP, Announcer: ann,
		Elector: ownerElector{}, Source: src, Interface: "eth0", Recorder: rec, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ag.Run(ctx) }()
	defer func() { cancel(); <-done }()

	waitFor(t, "the lease recorded on the Service Lease", func() bool {
		l, err := client.CoordinationV1().Leases("kube-system").Get(ctx, "vip-dhcp-default-web", metav1.GetOptions{})
		r, ok, _ := lbsvc.ParseDHCPRecord(l.Annotations)
		return err == nil && ok && r.Addr == vip
	})
	if len(ann.Held()) != 0 {
		t.Fatalf("announced %v before status shows it", ann.Held())
	}
	svc.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: vip.String()}}
	if _, err := client.CoreV1().Services("default").UpdateStatus(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the address announced on the macvlan", func() bool { return ann.Bound()[vip] == "vipd0123456789a" })
	if err := client.CoreV1().Services("default").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the lease given back", func() bool { return slices.Contains(dh.take(), "release default/web") })
	if len(ann.Held()) != 0 || dh.Running("default/web") {
		t.Fatalf("after deletion: announced %v, client running %v", ann.Held(), dh.Running("default/web"))
	}
}

// waitFor polls ok with a generous deadline (an eventual condition).
func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not seen within a minute", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
