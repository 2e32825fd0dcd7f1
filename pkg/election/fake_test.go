package election

import (
	"maps"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	coordv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	testclock "k8s.io/utils/clock/testing"

	"github.com/vip-lb/vip/pkg/lbsvc"
)

var leasesGVR = coordv1.SchemeGroupVersion.WithResource("leases")

// newFakeClient is a fake clientset whose Leases behave like the API
// server's for what election relies on: every write gets a new
// resourceVersion, an update with a stale one conflicts, and a delete
// honours its resourceVersion precondition.
func newFakeClient() *fakeAPI {
	c := &fakeAPI{Clientset: fake.NewClientset(), wins: map[string]int{}}
	rv := 100
	tracker := c.Tracker()
	c.PrependReactor("*", "leases", func(a k8stesting.Action) (bool, runtime.Object, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		ns := a.GetNamespace()
		switch a.GetVerb() {
		case "create":
			obj := a.(k8stesting.CreateAction).GetObject().DeepCopyObject()
			m, _ := meta.Accessor(obj)
			rv++
			m.SetResourceVersion(strconv.Itoa(rv))
			m.SetUID(types.UID("uid-" + strconv.Itoa(rv)))
			if err := tracker.Create(leasesGVR, obj, ns); err != nil {
				return true, nil, err
			}
			c.wins[ns+"/"+m.GetName()+"@create"]++
			return true, obj, nil
		case "update":
			obj := a.(k8stesting.UpdateAction).GetObject().DeepCopyObject()
			m, _ := meta.Accessor(obj)
			cur, err := tracker.Get(leasesGVR, ns, m.GetName())
			if err != nil {
				return true, nil, err
			}
			cm, _ := meta.Accessor(cur)
			if m.GetResourceVersion() != cm.GetResourceVersion() {
				return true, nil, apierrors.NewConflict(coordv1.Resource("leases"), m.GetName(), nil)
			}
			base := m.GetResourceVersion()
			rv++
			m.SetResourceVersion(strconv.Itoa(rv))
			if err := tracker.Update(leasesGVR, obj, ns); err != nil {
				return true, nil, err
			}
			c.wins[ns+"/"+m.GetName()+"@"+base]++
			return true, obj, nil
		case "delete":
			a := a.(k8stesting.DeleteAction)
			cur, err := tracker.Get(leasesGVR, ns, a.GetName())
			if err != nil {
				return true, nil, err
			}
			cm, _ := meta.Accessor(cur)
			if p := a.GetDeleteOptions().Preconditions; p != nil && p.ResourceVersion != nil && *p.ResourceVersion != cm.GetResourceVersion() {
				return true, nil, apierrors.NewConflict(coordv1.Resource("leases"), a.GetName(), nil)
			}
			return true, nil, tracker.Delete(leasesGVR, ns, a.GetName())
		}
		return false, nil, nil
	})
	return c
}

// fakeAPI is a fake clientset with API-server-like Lease versioning; it
// counts successful writes per Lease and base version.
type fakeAPI struct {
	*fake.Clientset
	mu   sync.Mutex
	wins map[string]int // "ns/name@baseRV" ("@create" for creates) -> successful writes
}

// successes returns the write counts by base version.
func (c *fakeAPI) successes() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.wins)
}

// epoch0 is the fake clocks' start.
var epoch0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// recorder collects the callbacks.
type recorder struct {
	mu     sync.Mutex
	nodes  []transition
	leases []string
}

func (r *recorder) onNode(node string, alive bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.nodes = append(r.nodes, transition{node, alive})
}

func (r *recorder) onLease(ns, name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.leases = append(r.leases, ns+"/"+name)
}

func (r *recorder) nodeEvents() []transition {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]transition(nil), r.nodes...)
}

func (r *recorder) leaseEvents() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.leases...)
}

func (r *recorder) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.nodes, r.leases = nil, nil
}

// unit is an Elector driven by hand: no goroutines, a fake clock.
type unit struct {
	*Elector
	clk *testclock.FakeClock
	rec *recorder
}

// newUnit builds an Elector for node on client without running it.
func newUnit(t *testing.T, client *fakeAPI, node string, mod func(*Options)) *unit {
	t.Helper()
	clk := testclock.NewFakeClock(epoch0)
	rec := &recorder{}
	o := Options{
		Client: client, NodeName: node, Logger: testr.New(t), Clock: clk,
		OnNodeChange: rec.onNode, OnServiceLeaseChange: rec.onLease,
		SettleTime: 5 * time.Second,
	}
	if mod != nil {
		mod(&o)
	}
	e, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	e.synced = func() bool { return true } // the cache is filled by hand
	return &unit{Elector: e, clk: clk, rec: rec}
}

// hbLease is a heartbeat Lease of node at resourceVersion rv.
func hbLease(node, rv, health string) *coordv1.Lease {
	l := &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{
		Name: HeartbeatPrefix + node, Namespace: DefaultNamespace, ResourceVersion: rv,
		Labels: map[string]string{LabelManagedBy: ManagedByValue, LabelRole: RoleHeartbeat},
	}}
	l.Annotations = map[string]string{lbsvc.AnnotationNodeReady: "true"}
	if health != "" {
		l.Annotations[AnnotationHealth] = health
	}
	l.Spec.HolderIdentity = &node
	return l
}

// beat makes u observe a heartbeat of node (a new version each call).
func (u *unit) beat(node string) {
	u.mu.Lock()
	rv := "1"
	if st := u.nodes[node]; st != nil {
		n, _ := strconv.Atoi(st.rv)
		rv = strconv.Itoa(n + 1)
	}
	health := ""
	if node != u.self {
		health = "http://" + node + "/health"
	}
	u.mu.Unlock()
	u.onUpsert(nil, hbLease(node, rv, health))
}

// ready makes u's own node alive: renewed once and seen by the informer.
func (u *unit) ready() {
	u.mu.Lock()
	u.hb.everOK, u.hb.lastOK, u.hb.lastAttemptOK = true, u.clk.Now(), true
	u.mu.Unlock()
	u.beat(u.self)
}

// tick advances the clock by d in steps of one period; at each step the
// listed nodes (and this one, while live) renew.
func (u *unit) tick(d time.Duration, selfLive bool, renewing ...string) {
	p := u.o.HeartbeatPeriod
	for step := time.Duration(0); step < d; step += p {
		u.clk.Step(p)
		if selfLive {
			u.beat(u.self)
		}
		for _, n := range renewing {
			u.beat(n)
		}
		u.evaluate()
	}
}

// svcLease is a Service Lease held by holder ("" = unset).
func svcLease(ns, name, holder, rv string) *coordv1.Lease {
	l := &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{
		Name: name, Namespace: ns, ResourceVersion: rv,
		Labels: map[string]string{LabelManagedBy: ManagedByValue, LabelRole: RoleService},
	}}
	if holder != "" {
		l.Spec.HolderIdentity = &holder
	}
	return l
}

// seed stores l in the fake API server (through its reactors, so it gets
// a version) and in u's informer cache, and returns the stored copy.
func seed(t *testing.T, client *fakeAPI, l *coordv1.Lease, units ...*unit) *coordv1.Lease {
	t.Helper()
	l = l.DeepCopy()
	l.ResourceVersion = ""
	out, err := client.CoordinationV1().Leases(l.Namespace).Create(t.Context(), l, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range units {
		if err := u.informer.GetIndexer().Add(out); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// stored reads a Lease from the fake API server (nil when missing).
func stored(t *testing.T, client *fakeAPI, ns, name string) *coordv1.Lease {
	t.Helper()
	l, err := client.CoordinationV1().Leases(ns).Get(t.Context(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// keyPreferring finds a service key whose preferred node among nodes is
// want (deterministic: the hash is fixed).
func keyPreferring(t *testing.T, want string, nodes ...string) string {
	t.Helper()
	return keyWith(t, func(k string) bool { return Preferred(k, nodes) == want })
}

// keyWith finds a service key for which ok holds.
func keyWith(t *testing.T, ok func(string) bool) string {
	t.Helper()
	for i := range 1000 {
		if k := "default/svc-" + strconv.Itoa(i); ok(k) {
			return k
		}
	}
	t.Fatal("no such service key")
	return ""
}
