package agent

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	clocktesting "k8s.io/utils/clock/testing"

	announcefake "github.com/vip-lb/vip/pkg/announce/fake"
	"github.com/vip-lb/vip/pkg/lbsvc"
)

// scriptElector answers every Ensure with d (per Lease in byLease when set)
// and records what it was asked. Release records whether the address was
// still bound when the Lease was handed off.
type scriptElector struct {
	mu      sync.Mutex
	d       Decision
	byLease map[string]Decision
	alive   []string
	fenced  bool
	ann     *announcefake.Announcer

	asked    []ensureCall
	released []string // "<lease> -> <node> bound=<bool>"
	deleted  []string
}

func (e *scriptElector) AliveNodes() []string { return slices.Clone(e.alive) }
func (e *scriptElector) Alive(n string) bool  { return slices.Contains(e.alive, n) }
func (e *scriptElector) Fenced() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.fenced
}
func (e *scriptElector) decision(lease string) Decision {
	if d, ok := e.byLease[lease]; ok {
		return d
	}
	return e.d
}
func (e *scriptElector) Ensure(_ context.Context, ns, lease, key string, cands []string) (Decision, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.asked = append(e.asked, ensureCall{ns, lease, key, slices.Clone(cands)})
	return e.decision(lease), nil
}
func (e *scriptElector) Release(_ context.Context, _, lease, successor string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	addr, _ := lbsvc.AddressFromLeaseName(lease)
	e.released = append(e.released, fmt.Sprintf("%s -> %s bound=%t", lease, successor, slices.Contains(e.ann.Held(), addr)))
	return nil
}
func (e *scriptElector) Delete(_ context.Context, _, lease string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.deleted = append(e.deleted, lease)
	return nil
}
func (e *scriptElector) Holder(_, lease string) (string, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	h := e.decision(lease).Holder
	return h, h != ""
}

// set changes the answer under the lock.
func (e *scriptElector) set(f func(e *scriptElector)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	f(e)
}

// forget clears what was recorded.
func (e *scriptElector) forget() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.asked, e.released, e.deleted = nil, nil, nil
}

// world is an agent (node n1) over informer stores filled by the test: no
// informer runs and no API server is involved, so each step is exact.
type world struct {
	t   *testing.T
	a   *Agent
	el  *scriptElector
	ann *announcefake.Announcer
	rec *record.FakeRecorder
	clk *clocktesting.FakeClock
	src *fakeSource    // nil unless the scenario plugs one in
	fw  *fakeForwarder // nil unless the scenario plugs one in
}

func newWorld(t *testing.T, mode Mode, el *scriptElector, opts func(*Options), objs ...runtime.Object) *world {
	t.Helper()
	ann := announcefake.New()
	rec := record.NewFakeRecorder(1000)
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	o := Options{Client: fake.NewClientset(), NodeName: "n1", Mode: mode, Announcer: ann,
		Interface: "eth0", Recorder: rec, Clock: clk}
	if el != nil {
		el.ann = ann
		o.Elector = el
	}
	if opts != nil {
		opts(&o)
	}
	a, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.queue.ShutDown)
	w := &world{t: t, a: a, el: el, ann: ann, rec: rec, clk: clk}
	for _, obj := range objs {
		w.put(obj)
	}
	return w
}

// store returns the informer store that holds obj's kind.
func (w *world) store(obj runtime.Object) cache.Store {
	switch obj.(type) {
	case *v1.Service:
		return w.a.factory.Core().V1().Services().Informer().GetStore()
	case *discoveryv1.EndpointSlice:
		return w.a.factory.Discovery().V1().EndpointSlices().Informer().GetStore()
	case *v1.Node:
		return w.a.factory.Core().V1().Nodes().Informer().GetStore()
	}
	w.t.Fatalf("no store for %T", obj)
	return nil
}

// put adds or replaces obj and queues what the informer handlers would.
func (w *world) put(obj runtime.Object) {
	w.t.Helper()
	if err := w.store(obj).Update(obj); err != nil {
		w.t.Fatal(err)
	}
	w.queueFor(obj)
}

// remove deletes obj and queues what the informer handlers would.
func (w *world) remove(obj runtime.Object) {
	w.t.Helper()
	if err := w.store(obj).Delete(obj); err != nil {
		w.t.Fatal(err)
	}
	w.queueFor(obj)
}

func (w *world) queueFor(obj runtime.Object) {
	switch obj.(type) {
	case *v1.Service:
		w.a.enqueueObj(obj)
	case *discoveryv1.EndpointSlice:
		w.a.enqueueSlice(obj)
	case *v1.Node:
		w.a.EnqueueAll()
	}
}

// converge runs the queued reconciles until the queue is empty.
func (w *world) converge() {
	w.t.Helper()
	drain(w.t, w.a)
}

// events returns the Events recorded since the last call.
func (w *world) events() []string {
	var out []string
	for {
		select {
		case e := <-w.rec.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func svcWith(name, vip string, mod ...func(*v1.Service)) *v1.Service {
	s := sharedSvc(name, netip.MustParseAddr(vip), false)
	for _, m := range mod {
		m(s)
	}
	return s
}

const vipA = "10.7.1.1"

var (
	announceHere = Decision{Announce: true, Holder: "n1", Changed: true, Reason: "elected"}
	heldByN2     = Decision{Holder: "n2"}
)

// TestSyncScenarios drives Agent.sync through the situations the layer-2
// and BGP paths must handle. Each scenario converges on its objects, then
// optionally applies a change and converges again; the expectations are on
// the end state: what is bound (address -> interface), what the elector
// was asked, the hand-offs (and whether the address was still bound at
// that moment), the Leases deleted and the Events of the last step.
func TestSyncScenarios(t *testing.T) {
	type scenario struct {
		name   string
		mode   Mode
		opts   func(*Options)
		alive  []string
		decide Decision
		objs   []runtime.Object
		// change, when set, runs after the first convergence; what was
		// recorded until then is forgotten.
		change func(w *world)

		wantBound    map[string]string
		wantCands    []string // candidates of the last Ensure; nil: the elector is not asked
		wantReleased []string
		wantDeleted  []string
		wantEvents   []string // "<type> <reason>" of the last step, in order

		// Plug-ins: with source, a fakeSource supplying supply; with
		// forwarder, a fakeForwarder.
		source, forwarder bool
		supply            Supplied
		wantLease         string            // Lease of the last Ensure, when set
		wantSource        []string          // source calls of the last step
		wantServing       map[string]string // what the forwarder is told is served
		wantUnserved      []string          // forwarder Unserve calls of the last step
	}
	for _, sc := range []scenario{
		{
			name: "elected node announces on the default interface", mode: ModeARP, decide: announceHere,
			objs:      []runtime.Object{svcWith("web", vipA), readySlice("web", "n2")},
			wantBound: map[string]string{vipA: "eth0"}, wantCands: []string{"n1", "n2"},
			wantEvents: []string{"Normal Announcing"},
		},
		{
			name: "another node holds the address: not announced", mode: ModeARP, decide: heldByN2,
			objs:      []runtime.Object{svcWith("web", vipA), readySlice("web", "n2")},
			wantBound: map[string]string{}, wantCands: []string{"n1", "n2"},
		},
		{
			name: "externalTrafficPolicy Local: candidates are the intersection over the sharers", mode: ModeARP,
			alive: []string{"n1", "n2", "n3"}, decide: announceHere,
			objs: []runtime.Object{svcWith("a", vipA), svcWith("b", vipA, local), svcWith("c", vipA, local),
				readySlice("a", "n2"), readySlice("b", "n1", "n2"), readySlice("c", "n1", "n3")},
			wantBound: map[string]string{vipA: "eth0"}, wantCands: []string{"n1"},
			wantEvents: []string{"Normal Announcing", "Normal Announcing", "Normal Announcing"},
		},
		{
			name: "the exclude label keeps a node out of the candidates", mode: ModeARP, decide: heldByN2,
			objs:      []runtime.Object{node("n1", true), node("n2", false), svcWith("web", vipA), readySlice("web", "n2")},
			wantBound: map[string]string{}, wantCands: []string{"n2"},
		},
		{
			name: "labelled excluded while announcing: handed off, still bound until the successor announces", mode: ModeARP, decide: announceHere,
			objs: []runtime.Object{node("n1", false), node("n2", false), svcWith("web", vipA), readySlice("web", "n2")},
			change: func(w *world) {
				w.el.set(func(e *scriptElector) { e.d = Decision{Holder: "n1", HandOffTo: "n2", Reason: "not a candidate"} })
				w.put(node("n1", true))
			},
			wantBound: map[string]string{vipA: "eth0"}, wantCands: []string{"n2"},
			wantReleased: []string{lbsvc.AddressLeaseName(netip.MustParseAddr(vipA)) + " -> n2 bound=true"},
		},
		{
			name: "no other candidate: withdrawn, then the Lease released to nobody", mode: ModeARP, decide: announceHere,
			objs: []runtime.Object{svcWith("web", vipA), readySlice("web", "n1")},
			change: func(w *world) {
				w.el.set(func(e *scriptElector) {
					e.d = Decision{Holder: "n1", HandOffTo: releaseToNobody, Reason: "no candidate"}
				})
				w.a.EnqueueAll()
			},
			wantBound: map[string]string{}, wantCands: []string{"n1", "n2"},
			wantReleased: []string{lbsvc.AddressLeaseName(netip.MustParseAddr(vipA)) + " -> \x00nobody bound=false"},
			wantEvents:   []string{"Normal Withdrawn"},
		},
		{
			name: "fenced: withdrawn without asking the elector", mode: ModeARP, decide: announceHere,
			objs: []runtime.Object{svcWith("web", vipA), readySlice("web", "n1")},
			change: func(w *world) {
				w.el.set(func(e *scriptElector) { e.fenced = true })
				w.a.EnqueueAll()
			},
			wantBound: map[string]string{}, wantEvents: []string{"Normal Withdrawn"},
		},
		{
			name: "interface move: withdrawn from the old, announced on the new", mode: ModeARP, decide: announceHere,
			opts: func(o *Options) { o.AllowedInterfaces = []string{"eth1"} },
			objs: []runtime.Object{svcWith("web", vipA), readySlice("web", "n1")},
			change: func(w *world) {
				w.put(svcWith("web", vipA, annotated(lbsvc.AnnotationServiceInterface, "eth1")))
			},
			wantBound: map[string]string{vipA: "eth1"}, wantCands: []string{"n1", "n2"},
		},
		{
			name: "an interface not allowed is refused: stays on the default", mode: ModeARP, decide: announceHere,
			objs:      []runtime.Object{svcWith("web", vipA, annotated(lbsvc.AnnotationServiceInterface, "eth9")), readySlice("web", "n1")},
			wantBound: map[string]string{vipA: "eth0"}, wantCands: []string{"n1", "n2"},
			wantEvents: []string{"Warning " + ReasonInterfaceNotAllowed, "Normal Announcing"},
		},
		{
			name: "deletion timestamp: withdrawn at once and the address Lease deleted", mode: ModeARP, decide: announceHere,
			objs: []runtime.Object{svcWith("web", vipA), readySlice("web", "n1")},
			change: func(w *world) {
				now := metav1.NewTime(w.clk.Now())
				w.put(svcWith("web", vipA, func(s *v1.Service) {
					s.DeletionTimestamp = &now
					s.Finalizers = []string{"service.kubernetes.io/load-balancer-cleanup"}
				}))
			},
			wantBound:   map[string]string{},
			wantDeleted: []string{lbsvc.AddressLeaseName(netip.MustParseAddr(vipA))},
			wantEvents:  []string{"Normal Withdrawn"},
		},
		{
			name: "Service deleted: withdrawn and the address Lease deleted", mode: ModeARP, decide: announceHere,
			objs:      []runtime.Object{svcWith("web", vipA), readySlice("web", "n1")},
			change:    func(w *world) { w.remove(svcWith("web", vipA)) },
			wantBound: map[string]string{}, wantDeleted: []string{lbsvc.AddressLeaseName(netip.MustParseAddr(vipA))},
		},
		{
			name: "status moves to another address: the old withdrawn, the new announced", mode: ModeARP, decide: announceHere,
			objs:      []runtime.Object{svcWith("web", vipA), readySlice("web", "n1")},
			change:    func(w *world) { w.put(svcWith("web", "10.7.1.2")) },
			wantBound: map[string]string{"10.7.1.2": "eth0"}, wantCands: []string{"n1", "n2"},
			wantDeleted: []string{lbsvc.AddressLeaseName(netip.MustParseAddr(vipA))},
			wantEvents:  []string{"Normal Withdrawn", "Normal Announcing"},
		},
		{
			name: "no ready endpoint any more: withdrawn with a NoReadyEndpoints Warning", mode: ModeARP, decide: announceHere,
			objs:      []runtime.Object{svcWith("web", vipA), readySlice("web", "n2")},
			change:    func(w *world) { w.put(notReadySlice("web", "n2")) },
			wantBound: map[string]string{}, wantCands: []string{"n1", "n2"},
			wantEvents: []string{"Warning " + ReasonNoReadyEndpoints},
		},
		{
			name: "no ready endpoint but opted out: announced", mode: ModeARP, decide: announceHere,
			objs: []runtime.Object{svcWith("web", vipA, annotated(lbsvc.AnnotationAllowWithoutEndpoints, "true")),
				notReadySlice("web", "n2")},
			wantBound: map[string]string{vipA: "eth0"}, wantCands: []string{"n1", "n2"},
			wantEvents: []string{"Normal Announcing"},
		},
		{
			name: "a sharer without endpoints does not take the address from one with", mode: ModeARP, decide: announceHere,
			objs:      []runtime.Object{svcWith("web", vipA), readySlice("web", "n2")},
			change:    func(w *world) { w.put(svcWith("idle", vipA)) },
			wantBound: map[string]string{vipA: "eth0"}, wantCands: []string{"n1", "n2"},
		},
		{
			name: "ClusterIP again: withdrawn", mode: ModeARP, decide: announceHere,
			objs: []runtime.Object{svcWith("web", vipA), readySlice("web", "n1")},
			change: func(w *world) {
				w.put(svcWith("web", vipA, func(s *v1.Service) { s.Spec.Type = v1.ServiceTypeClusterIP }))
			},
			wantBound: map[string]string{}, wantDeleted: []string{lbsvc.AddressLeaseName(netip.MustParseAddr(vipA))},
			wantEvents: []string{"Normal Withdrawn"},
		},
		{
			name: "BGP: an eligible node announces without an election", mode: ModeBGP,
			objs:      []runtime.Object{svcWith("web", vipA, local), readySlice("web", "n1")},
			wantBound: map[string]string{vipA: "eth0"}, wantEvents: []string{"Normal Announcing"},
		},
		{
			name: "BGP: no local ready endpoint with policy Local: not announced", mode: ModeBGP,
			objs:      []runtime.Object{svcWith("web", vipA, local), readySlice("web", "n2")},
			wantBound: map[string]string{},
		},
		{
			name: "BGP: labelled excluded while announcing: withdrawn", mode: ModeBGP,
			objs:      []runtime.Object{node("n1", false), svcWith("web", vipA), readySlice("web", "n2")},
			change:    func(w *world) { w.put(node("n1", true)) },
			wantBound: map[string]string{}, wantEvents: []string{"Normal Withdrawn"},
		},
		{
			name: "BGP: endpoints gone: withdrawn with a NoReadyEndpoints Warning", mode: ModeBGP,
			objs:      []runtime.Object{svcWith("web", vipA), readySlice("web", "n2")},
			change:    func(w *world) { w.put(notReadySlice("web", "n2")) },
			wantBound: map[string]string{}, wantEvents: []string{"Warning " + ReasonNoReadyEndpoints},
		},
		{
			name: "sourced Service: elected on the source's Lease, announced on the source's interface", mode: ModeARP, decide: announceHere,
			source: true, forwarder: true, supply: Supplied{Addr: netip.MustParseAddr(vipA), Interface: "macv0"},
			objs:      []runtime.Object{svcWith("dh", vipA, sourced)},
			wantBound: map[string]string{vipA: "macv0"}, wantCands: []string{"n1", "n2"}, wantLease: "src-team-dh",
			wantSource:  []string{"acquire team/dh iface=eth0 status=" + vipA + " lease=kube-system/src-team-dh"},
			wantServing: map[string]string{"team/dh": vipA}, wantEvents: []string{"Normal Announcing"},
		},
		{
			name: "sourced Service: the interface a Service names is checked before the source sees it", mode: ModeARP, decide: announceHere,
			source: true, supply: Supplied{Addr: netip.MustParseAddr(vipA), Interface: "macv0"},
			objs:      []runtime.Object{svcWith("dh", vipA, sourced, annotated(lbsvc.AnnotationServiceInterface, "mgmt0"))},
			wantBound: map[string]string{vipA: "macv0"}, wantCands: []string{"n1", "n2"},
			wantSource: []string{"acquire team/dh iface=eth0 status=" + vipA + " lease=kube-system/src-team-dh"},
			wantEvents: []string{"Warning " + ReasonInterfaceNotAllowed, "Normal Announcing"},
		},
		{
			name: "sourced Service: not announced before status shows the supplied address", mode: ModeARP, decide: announceHere,
			source: true, supply: Supplied{Addr: netip.MustParseAddr("10.7.1.9"), Interface: "macv0"},
			objs:      []runtime.Object{svcWith("dh", vipA, sourced)},
			wantBound: map[string]string{}, wantCands: []string{"n1", "n2"},
			wantSource: []string{"acquire team/dh iface=eth0 status=" + vipA + " lease=kube-system/src-team-dh"},
		},
		{
			name: "sourced Service: the source withdraws, forwarding goes first", mode: ModeARP, decide: announceHere,
			source: true, forwarder: true, supply: Supplied{Addr: netip.MustParseAddr(vipA), Interface: "macv0"},
			objs: []runtime.Object{svcWith("dh", vipA, sourced)},
			change: func(w *world) {
				w.src.set(func(s *fakeSource) { s.supply = Supplied{Withdraw: "lease lost"} })
				w.a.EnqueueAll()
			},
			wantBound: map[string]string{}, wantCands: []string{"n1", "n2"},
			wantSource:  []string{"acquire team/dh iface=eth0 status=" + vipA + " lease=kube-system/src-team-dh"},
			wantServing: map[string]string{}, wantUnserved: []string{"team/dh bound=true"},
			wantEvents: []string{"Normal Withdrawn"},
		},
		{
			name: "sourced Service owned by another node: withdrawn, kept for it", mode: ModeARP, decide: announceHere,
			source: true, supply: Supplied{Addr: netip.MustParseAddr(vipA), Interface: "macv0"},
			objs: []runtime.Object{svcWith("dh", vipA, sourced)},
			change: func(w *world) {
				w.el.set(func(e *scriptElector) { e.d = heldByN2 })
				w.a.EnqueueAll()
			},
			wantBound: map[string]string{}, wantCands: []string{"n1", "n2"},
			wantSource: []string{"release team/dh gone=false"}, wantEvents: []string{"Normal Withdrawn"},
		},
		{
			name: "sourced Service deleted: given back and its Lease deleted", mode: ModeARP, decide: announceHere,
			source: true, supply: Supplied{Addr: netip.MustParseAddr(vipA), Interface: "macv0"},
			objs:      []runtime.Object{svcWith("dh", vipA, sourced)},
			change:    func(w *world) { w.remove(svcWith("dh", vipA, sourced)) },
			wantBound: map[string]string{}, wantDeleted: []string{"src-team-dh"},
			wantSource: []string{"release team/dh gone=true"},
		},
		{
			name: "no longer sourced: given back, then elected per address", mode: ModeARP, decide: announceHere,
			source: true, supply: Supplied{Addr: netip.MustParseAddr(vipA), Interface: "macv0"},
			objs:      []runtime.Object{svcWith("dh", vipA, sourced), readySlice("dh", "n1")},
			change:    func(w *world) { w.put(svcWith("dh", vipA)) },
			wantBound: map[string]string{vipA: "eth0"}, wantCands: []string{"n1", "n2"}, wantLease: lbsvc.AddressLeaseName(netip.MustParseAddr(vipA)),
			wantDeleted: []string{"src-team-dh"}, wantSource: []string{"release team/dh gone=true"},
			wantEvents: []string{"Normal Withdrawn", "Normal Announcing"},
		},
		{
			name: "a Service from a pool never reaches the source", mode: ModeARP, decide: announceHere,
			source: true, objs: []runtime.Object{svcWith("web", vipA), readySlice("web", "n1")},
			wantBound: map[string]string{vipA: "eth0"}, wantCands: []string{"n1", "n2"},
			wantEvents: []string{"Normal Announcing"},
		},
		{
			name: "forwarder: told of every Service on the address", mode: ModeARP, decide: announceHere, forwarder: true,
			objs:      []runtime.Object{svcWith("a", vipA), svcWith("b", vipA), readySlice("a", "n1"), readySlice("b", "n1")},
			wantBound: map[string]string{vipA: "eth0"}, wantCands: []string{"n1", "n2"},
			wantServing: map[string]string{"team/a": vipA, "team/b": vipA},
			wantEvents:  []string{"Normal Announcing", "Normal Announcing"},
		},
		{
			name: "forwarder: a sharer without endpoints is unserved, the address stays", mode: ModeARP, decide: announceHere, forwarder: true,
			objs:      []runtime.Object{svcWith("a", vipA), svcWith("b", vipA), readySlice("a", "n1"), readySlice("b", "n1")},
			change:    func(w *world) { w.put(notReadySlice("b", "n1")) },
			wantBound: map[string]string{vipA: "eth0"}, wantCands: []string{"n1", "n2"},
			wantServing: map[string]string{"team/a": vipA}, wantUnserved: []string{"team/b bound=true"},
			wantEvents: []string{"Warning " + ReasonNoReadyEndpoints},
		},
		{
			name: "forwarder: another node takes the address: unserved while still bound", mode: ModeARP, decide: announceHere, forwarder: true,
			objs: []runtime.Object{svcWith("web", vipA), readySlice("web", "n1")},
			change: func(w *world) {
				w.el.set(func(e *scriptElector) { e.d = heldByN2 })
				w.a.EnqueueAll()
			},
			wantBound: map[string]string{}, wantCands: []string{"n1", "n2"},
			wantServing: map[string]string{}, wantUnserved: []string{"team/web bound=true"},
			wantEvents: []string{"Normal Withdrawn"},
		},
	} {
		t.Run(sc.name, func(t *testing.T) {
			var el *scriptElector
			if sc.mode == ModeARP {
				alive := sc.alive
				if alive == nil {
					alive = []string{"n1", "n2"}
				}
				el = &scriptElector{d: sc.decide, alive: alive}
			}
			var src *fakeSource
			var fw *fakeForwarder
			if sc.source {
				src = &fakeSource{supply: sc.supply}
			}
			if sc.forwarder {
				fw = &fakeForwarder{serving: map[string]string{}}
			}
			opts := func(o *Options) {
				if sc.opts != nil {
					sc.opts(o)
				}
				plugged(src, fw)(o)
			}
			w := newWorld(t, sc.mode, el, opts, sc.objs...)
			w.src, w.fw = src, fw
			w.converge()
			if sc.change != nil {
				w.events()
				if el != nil {
					el.forget()
				}
				if src != nil {
					src.set(func(s *fakeSource) { s.calls = nil })
				}
				if fw != nil {
					fw.unserved = nil
				}
				sc.change(w)
				w.converge()
			}
			if src != nil && !slices.Equal(src.calls, sc.wantSource) {
				t.Errorf("source calls %q, want %q", src.calls, sc.wantSource)
			}
			if fw != nil && (!maps.Equal(fw.serving, sc.wantServing) || !slices.Equal(fw.unserved, sc.wantUnserved)) {
				t.Errorf("forwarder serves %v, unserved %v; want %v, %v", fw.serving, fw.unserved, sc.wantServing, sc.wantUnserved)
			}
			if sc.wantLease != "" && (len(el.asked) == 0 || el.asked[len(el.asked)-1].lease != sc.wantLease) {
				t.Errorf("last Ensure %+v, want Lease %s", el.asked, sc.wantLease)
			}
			got := map[string]string{}
			for a, iface := range w.ann.Bound() {
				got[a.String()] = iface
			}
			if !maps.Equal(got, sc.wantBound) {
				t.Errorf("bound %v, want %v", got, sc.wantBound)
			}
			if el != nil {
				var cands []string
				if len(el.asked) > 0 {
					cands = el.asked[len(el.asked)-1].candidates
				}
				if !slices.Equal(cands, sc.wantCands) {
					t.Errorf("last candidates %v, want %v (asked %+v)", cands, sc.wantCands, el.asked)
				}
				if !slices.Equal(el.released, sc.wantReleased) {
					t.Errorf("released %v, want %v", el.released, sc.wantReleased)
				}
				if !slices.Equal(el.deleted, sc.wantDeleted) {
					t.Errorf("deleted Leases %v, want %v", el.deleted, sc.wantDeleted)
				}
			}
			var reasons []string
			for _, e := range w.events() {
				f := strings.Fields(e)
				reasons = append(reasons, f[0]+" "+f[1])
			}
			if !slices.Equal(reasons, sc.wantEvents) {
				t.Errorf("events %v, want %v", reasons, sc.wantEvents)
			}
		})
	}
}

// TestRequeueFollowsTheClock: an elector's RequeueAfter brings the address
// back when the (fake) clock passes it, not before.
func TestRequeueFollowsTheClock(t *testing.T) {
	el := &scriptElector{d: Decision{Holder: "n2", RequeueAfter: 5 * time.Second}, alive: []string{"n1", "n2"}}
	w := newWorld(t, ModeARP, el, nil, svcWith("web", vipA), readySlice("web", "n1"))
	w.converge()
	if n := w.a.queue.Len(); n != 0 {
		t.Fatalf("queue holds %d items before the clock moved", n)
	}
	el.forget()
	el.set(func(e *scriptElector) { e.d = announceHere })
	waitFor(t, w.clk.HasWaiters)
	w.clk.Step(5 * time.Second)
	waitFor(t, func() bool { return w.a.queue.Len() > 0 })
	w.converge()
	if !slices.Equal(w.ann.Held(), []netip.Addr{netip.MustParseAddr(vipA)}) {
		t.Fatalf("after the requeue: bound %v, want %s", w.ann.Held(), vipA)
	}
}
