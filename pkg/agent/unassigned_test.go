package agent

import (
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"

	announcefake "github.com/vip-lb/vip/pkg/announce/fake"
)

// fakeTimers records the timers a watch starts; fire runs them.
type fakeTimers struct {
	delays []time.Duration
	fns    []func()
}

func (f *fakeTimers) start(d time.Duration, fn func()) func() bool {
	f.delays = append(f.delays, d)
	f.fns = append(f.fns, fn)
	i := len(f.fns) - 1
	return func() bool { f.fns[i] = func() {}; return true }
}

func (f *fakeTimers) fire() {
	for _, fn := range f.fns {
		fn()
	}
	f.fns = nil
}

func unassignedAgent(t *testing.T, node string, now time.Time, objs ...runtime.Object) (*Agent, *unassignedWatch, *fakeTimers, *record.FakeRecorder) {
	t.Helper()
	rec := record.NewFakeRecorder(10)
	a, err := New(Options{Client: fake.NewClientset(objs...), NodeName: node, Mode: ModeARP,
		Announcer: announcefake.New(), Elector: &askingElector{alive: []string{"n1", "n2", "n3"}}, Recorder: rec})
	if err != nil {
		t.Fatal(err)
	}
	ft := &fakeTimers{}
	w := &unassignedWatch{a: a, after: UnassignedAfter, now: func() time.Time { return now }, timer: ft.start,
		pending: map[string]func() bool{}, warned: map[string]bool{}}
	return a, w, ft, rec
}

func drainEvents(rec *record.FakeRecorder) []string {
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

func TestNoAddressAssigned(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 40, 0, time.UTC)
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "nginx", Namespace: "default", CreationTimestamp: metav1.NewTime(now.Add(-10 * time.Second)),
			Annotations: map[string]string{"kube-vip.io/loadbalancerIPs": "10.0.0.10"}},
		Spec: v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer},
	}
	held := "vip-ccm-1"
	ccmLease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "vip-ccm", Namespace: "kube-system"},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: &held, RenewTime: &metav1.MicroTime{Time: now.Add(-time.Second)}}}

	for _, tc := range []struct {
		name     string
		objs     []runtime.Object
		assigned bool
		want     string // "" = no Event from any agent
	}{
		{name: "agent only: no vip-ccm", want: "no vip-ccm is running"},
		{name: "vip-ccm runs but gave nothing", objs: []runtime.Object{ccmLease}, want: "vip-ccm is running"},
		{name: "assigned before the deadline", assigned: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, node := range []string{"n1", "n2", "n3"} {
				a, w, ft, rec := unassignedAgent(t, node, now, tc.objs...)
				s := svc.DeepCopy()
				if err := a.factory.Core().V1().Services().Informer().GetIndexer().Add(s); err != nil {
					t.Fatal(err)
				}
				w.observe(s)
				if len(ft.delays) != 1 || ft.delays[0] != 20*time.Second {
					t.Fatalf("timers %v; want one of 20s (30s after creation)", ft.delays)
				}
				if tc.assigned {
					s = s.DeepCopy()
					s.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: "10.0.0.10"}}
					_ = a.factory.Core().V1().Services().Informer().GetIndexer().Update(s)
					w.observe(s)
				}
				ft.fire()
				for _, e := range drainEvents(rec) {
					got = append(got, node+": "+e)
				}
				w.observe(s) // seen again: never a second Event
				ft.fire()
				if extra := drainEvents(rec); len(extra) > 0 {
					t.Errorf("%s: second Event %v", node, extra)
				}
			}
			if tc.want == "" {
				if len(got) > 0 {
					t.Fatalf("Events %v; want none", got)
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("Events from three agents: %v; want exactly one", got)
			}
			if !strings.Contains(got[0], "Warning "+ReasonNoAddressAssigned) || !strings.Contains(got[0], tc.want) || !strings.Contains(got[0], "10.0.0.10") {
				t.Errorf("Event %q; want %s naming 10.0.0.10 and %q", got[0], ReasonNoAddressAssigned, tc.want)
			}
		})
	}
}

func TestFirstByHashSpreads(t *testing.T) {
	nodes := []string{"n1", "n2", "n3"}
	seen := map[string]int{}
	for i := range 300 {
		seen[firstByHash("ns/svc-"+string(rune('a'+i%26))+string(rune('a'+i/26)), nodes)]++
	}
	for _, n := range nodes {
		if seen[n] == 0 {
			t.Errorf("node %s never chosen: %v", n, seen)
		}
	}
	if firstByHash("k", []string{"n2", "n1"}) != firstByHash("k", []string{"n1", "n2"}) {
		t.Error("the choice depends on the order of the nodes")
	}
}
