package agent

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	announcefake "github.com/vip-lb/vip/pkg/announce/fake"
	"github.com/vip-lb/vip/pkg/lbsvc"
)

// askingElector records what Ensure was asked and answers with d.
type askingElector struct {
	mu    sync.Mutex
	d     Decision
	alive []string
	asked []ensureCall
	gone  []string
}

type ensureCall struct {
	namespace, lease, key string
	candidates            []string
}

func (e *askingElector) AliveNodes() []string { return e.alive }
func (e *askingElector) Alive(string) bool    { return true }
func (e *askingElector) Fenced() bool         { return false }
func (e *askingElector) Ensure(_ context.Context, ns, lease, key string, cands []string) (Decision, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.asked = append(e.asked, ensureCall{ns, lease, key, slices.Clone(cands)})
	return e.d, nil
}
func (e *askingElector) Release(context.Context, string, string, string) error { return nil }
func (e *askingElector) Delete(_ context.Context, _, lease string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.gone = append(e.gone, lease)
	return nil
}
func (e *askingElector) Holder(string, string) (string, bool) { return e.d.Holder, e.d.Holder != "" }

func (e *askingElector) take() []ensureCall {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := e.asked
	e.asked = nil
	return out
}

func sharedSvc(name string, vip netip.Addr, local bool) *v1.Service {
	s := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "team"},
		Spec:       v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer},
		Status: v1.ServiceStatus{LoadBalancer: v1.LoadBalancerStatus{
			Ingress: []v1.LoadBalancerIngress{{IP: vip.String()}}}},
	}
	if local {
		s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
	}
	return s
}

func readySlice(svc string, nodes ...string) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: svc + "-x", Namespace: "team",
		Labels: map[string]string{discoveryv1.LabelServiceName: svc}}}
	ready := true
	for _, n := range nodes {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{"10.9.9.9"}, NodeName: &n,
			Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
	}
	return es
}

func local(s *v1.Service) { s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal }

func annotated(k, v string) func(*v1.Service) {
	return func(s *v1.Service) {
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations[k] = v
	}
}

func node(name string, exclude bool) *v1.Node {
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if exclude {
		n.Labels = map[string]string{labelExcludeLB: ""}
	}
	return n
}

func notReadySlice(svc string, nodes ...string) *discoveryv1.EndpointSlice {
	es := readySlice(svc, nodes...)
	no := false
	for i := range es.Endpoints {
		es.Endpoints[i].Conditions.Ready = &no
	}
	return es
}

// startTestAgent builds an agent on objs and waits for its informers.
func startTestAgent(t *testing.T, mode Mode, el Elector, objs ...runtime.Object) (*Agent, *fake.Clientset, *announcefake.Announcer) {
	t.Helper()
	return restartTestAgent(t, mode, fake.NewClientset(objs...), el)
}

// restartTestAgent starts an agent on an existing client: a new process,
// with nothing in memory.
func restartTestAgent(t *testing.T, mode Mode, client *fake.Clientset, el Elector) (*Agent, *fake.Clientset, *announcefake.Announcer) {
	t.Helper()
	ann := announcefake.New()
	a, err := New(Options{Client: client, NodeName: "n1", Mode: mode, Announcer: ann, Elector: el,
		Interface: "eth0", Recorder: record.NewFakeRecorder(1000)})
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	a.factory.Start(stop)
	a.cmFactory.Start(stop)
	if !cache.WaitForCacheSync(stop, a.synced...) {
		t.Fatal("informers did not sync")
	}
	return a, client, ann
}

// drain runs the queued reconciles until the queue is empty.
func drain(t *testing.T, a *Agent) {
	t.Helper()
	for a.queue.Len() > 0 {
		key, _ := a.queue.Get()
		if err := a.sync(context.Background(), key); err != nil {
			t.Fatalf("sync %s: %v", key, err)
		}
		a.queue.Forget(key)
		a.queue.Done(key)
	}
}

// TestSharedAddressOneElection: Services on one address are elected once,
// per address, with the intersection of their candidates; the address is
// announced once; deleting one leaves it announced; deleting all withdraws
// it and deletes its Lease.
func TestSharedAddressOneElection(t *testing.T) {
	vip := netip.MustParseAddr("10.7.0.8")
	el := &askingElector{d: Decision{Announce: true, Holder: "n1", Changed: true}, alive: []string{"n1", "n2", "n3"}}
	a, client, ann := startTestAgent(t, ModeARP, el,
		sharedSvc("a", vip, false), sharedSvc("b", vip, true), sharedSvc("c", vip, true),
		readySlice("b", "n1", "n2"), readySlice("c", "n1", "n3"), readySlice("a", "n2"))
	for _, n := range []string{"a", "b", "c"} {
		a.Enqueue("team/" + n)
	}
	drain(t, a)
	calls := el.take()
	if len(calls) == 0 {
		t.Fatal("no election")
	}
	for _, c := range calls {
		if c.namespace != "kube-system" || c.lease != lbsvc.AddressLeaseName(vip) || c.key != vip.String() {
			t.Fatalf("Ensure(%s, %s, %s): want the address Lease in the agent namespace", c.namespace, c.lease, c.key)
		}
		// b: n1,n2; c: n1,n3; a (Cluster): all: the intersection is n1.
		if !slices.Equal(c.candidates, []string{"n1"}) {
			t.Fatalf("candidates %v, want [n1]", c.candidates)
		}
	}
	if got := ann.Owners(vip); !slices.Equal(got, []string{addrKey(vip)}) {
		t.Fatalf("owners of %s: %v, want the address alone", vip, got)
	}

	if err := client.CoreV1().Services("team").Delete(context.Background(), "b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, err := a.svcs.Services("team").Get("b"); return err != nil })
	a.Enqueue("team/b")
	drain(t, a)
	if !slices.Contains(ann.Held(), vip) {
		t.Fatal("deleting one Service withdrew the address of the others")
	}
	// Now a (Cluster) and c (n1, n3).
	if calls := el.take(); len(calls) == 0 || !slices.Equal(calls[len(calls)-1].candidates, []string{"n1", "n3"}) {
		t.Fatalf("after b left: calls %+v, want candidates [n1 n3]", calls)
	}

	for _, n := range []string{"a", "c"} {
		if err := client.CoreV1().Services("team").Delete(context.Background(), n, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { l, _ := a.svcs.List(labelsEverything()); return len(l) == 0 })
	a.Enqueue("team/a")
	a.Enqueue("team/c")
	drain(t, a)
	if len(ann.Held()) != 0 {
		t.Fatalf("still announcing %v after every Service left", ann.Held())
	}
	if !slices.Contains(el.gone, lbsvc.AddressLeaseName(vip)) {
		t.Fatalf("address Lease not deleted: %v", el.gone)
	}
}

// TestSharedAddressBGP: in BGP mode a node announces a shared address only
// when it is a candidate for every Service on it.
func TestSharedAddressBGP(t *testing.T) {
	vip := netip.MustParseAddr("10.7.0.9")
	a, client, ann := startTestAgent(t, ModeBGP, nil,
		sharedSvc("a", vip, false), sharedSvc("b", vip, true), readySlice("b", "n2"), readySlice("a", "n1"))
	a.Enqueue("team/a")
	a.Enqueue("team/b")
	drain(t, a)
	if len(ann.Held()) != 0 {
		t.Fatalf("n1 announces %v, but b has no ready endpoint on n1", ann.Held())
	}
	if _, err := client.DiscoveryV1().EndpointSlices("team").Update(context.Background(), readySlice("b", "n1", "n2"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return a.readyNodes(sharedSvcKey(a, "b"))["n1"] })
	drain(t, a)
	if !slices.Equal(ann.Held(), []netip.Addr{vip}) {
		t.Fatalf("announced %v, want %s once b has an endpoint on n1", ann.Held(), vip)
	}
}

func sharedSvcKey(a *Agent, name string) *v1.Service {
	s, _ := a.svcs.Services("team").Get(name)
	return s
}

func labelsEverything() labels.Selector { return labels.Everything() }

// TestNoReadyEndpointWithdraws: a Service whose endpoints are all not ready
// is withdrawn with a NoReadyEndpoints Warning and comes back when one is
// ready; the opt-out annotation keeps it announced; a Service without an
// endpoint does not take the address from one on it that has.
func TestNoReadyEndpointWithdraws(t *testing.T) {
	vip := netip.MustParseAddr("10.7.0.10")
	el := &askingElector{d: Decision{Announce: true, Holder: "n1"}, alive: []string{"n1", "n2"}}
	a, client, ann := startTestAgent(t, ModeARP, el, sharedSvc("web", vip, false), readySlice("web", "n2"))
	rec := a.rec.(*record.FakeRecorder)
	a.Enqueue("team/web")
	drain(t, a)
	if !slices.Equal(ann.Held(), []netip.Addr{vip}) {
		t.Fatalf("announced %v, want %s", ann.Held(), vip)
	}
	setReady := func(ready bool) {
		t.Helper()
		es := readySlice("web", "n2")
		es.Endpoints[0].Conditions.Ready = &ready
		if _, err := client.DiscoveryV1().EndpointSlices("team").Update(context.Background(), es, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { return (len(a.readyEndpoints(sharedSvcKey(a, "web"))) > 0) == ready })
		drain(t, a)
	}
	setReady(false)
	if len(ann.Held()) != 0 {
		t.Fatalf("still announced %v without a ready endpoint", ann.Held())
	}
	if !hasEvent(rec, "Warning "+ReasonNoReadyEndpoints) {
		t.Fatal("no NoReadyEndpoints Warning")
	}
	setReady(true)
	if !slices.Equal(ann.Held(), []netip.Addr{vip}) {
		t.Fatalf("endpoint ready again: announced %v", ann.Held())
	}

	// Opt-out: announced without a ready endpoint.
	svc := sharedSvcKey(a, "web").DeepCopy()
	svc.Annotations = map[string]string{lbsvc.AnnotationAllowWithoutEndpoints: "true"}
	if _, err := client.CoreV1().Services("team").Update(context.Background(), svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		return sharedSvcKey(a, "web").Annotations[lbsvc.AnnotationAllowWithoutEndpoints] == "true"
	})
	setReady(false)
	if !slices.Equal(ann.Held(), []netip.Addr{vip}) {
		t.Fatalf("opted out, no ready endpoint: announced %v, want %s", ann.Held(), vip)
	}

	// A second Service on the address without any endpoint does not take it
	// from the first.
	if _, err := client.CoreV1().Services("team").Create(context.Background(), sharedSvc("idle", vip, false), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return sharedSvcKey(a, "idle") != nil })
	drain(t, a)
	if !slices.Equal(ann.Held(), []netip.Addr{vip}) {
		t.Fatalf("an endpoint-less sharer withdrew the address: %v", ann.Held())
	}
}

// hasEvent reports whether the recorder got an Event starting with prefix.
func hasEvent(rec *record.FakeRecorder, prefix string) bool {
	for {
		select {
		case e := <-rec.Events:
			if strings.HasPrefix(e, prefix) {
				return true
			}
		default:
			return false
		}
	}
}
