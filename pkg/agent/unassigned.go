package agent

import (
	"context"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"

	"github.com/vip-lb/vip/pkg/lbsvc"
)

// ReasonNoAddressAssigned is the Warning on a Service that vip serves and
// that still has no address in its status UnassignedAfter after it was
// seen: vip-agent announces only what vip-ccm wrote there, never straight
// from the annotation or spec.loadBalancerIP (a cluster that ran kube-vip
// without kube-vip-cloud-provider needs vip-ccm now).
const ReasonNoAddressAssigned = "NoAddressAssigned"

// UnassignedAfter is how long a Service may wait for its address before
// the Warning.
const UnassignedAfter = 30 * time.Second

// ccmLeases are the leader Leases a running vip-ccm holds in kube-system:
// vip's own name and the one kube-vip-cloud-provider's Deployment passes
// (--leader-elect-resource-name=kube-vip-cloud-controller).
var ccmLeases = []string{"vip-ccm", "kube-vip-cloud-controller"}

// unassignedWatch emits NoAddressAssigned once per Service, from one agent:
// the one ranked first for the Service among the agents alive (layer 2) or
// the ready nodes (BGP), so N agents do not write N Events.
type unassignedWatch struct {
	a     *Agent
	after time.Duration
	now   func() time.Time
	// timer starts f after d (time.AfterFunc; tests replace it).
	timer func(d time.Duration, f func()) func() bool

	mu      sync.Mutex
	pending map[string]func() bool // key -> stop
	warned  map[string]bool
}

// watchUnassigned follows the Service informer for Services without an
// address (hooked in New).
func watchUnassigned(a *Agent, inf cache.SharedIndexInformer) *unassignedWatch {
	w := &unassignedWatch{a: a, after: UnassignedAfter, now: a.o.Clock.Now,
		timer:   func(d time.Duration, f func()) func() bool { return a.o.Clock.AfterFunc(d, f).Stop },
		pending: map[string]func() bool{}, warned: map[string]bool{}}
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    w.observe,
		UpdateFunc: func(_, o any) { w.observe(o) },
		DeleteFunc: func(o any) {
			if tomb, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = tomb.Obj
			}
			if svc, ok := o.(*v1.Service); ok {
				w.forget(lbsvc.Key(svc), true)
			}
		},
	})
	return w
}

// waiting reports whether svc is served by vip and has no address yet.
func (w *unassignedWatch) waiting(svc *v1.Service) bool {
	return lbsvc.Wants(svc, w.a.o.Class) && svc.DeletionTimestamp == nil && len(svc.Status.LoadBalancer.Ingress) == 0
}

func (w *unassignedWatch) observe(o any) {
	svc, ok := o.(*v1.Service)
	if !ok {
		return
	}
	key := lbsvc.Key(svc)
	if !w.waiting(svc) {
		// Assigned (or no longer ours): a later wait gets a new Warning.
		w.forget(key, true)
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.pending[key] != nil || w.warned[key] {
		return
	}
	d := w.after - w.now().Sub(svc.CreationTimestamp.Time)
	d = max(d, 0)
	w.pending[key] = w.timer(d, func() { w.fire(key) })
}

func (w *unassignedWatch) forget(key string, clearWarned bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if stop := w.pending[key]; stop != nil {
		stop()
	}
	delete(w.pending, key)
	if clearWarned {
		delete(w.warned, key)
	}
}

func (w *unassignedWatch) fire(key string) {
	w.mu.Lock()
	delete(w.pending, key)
	w.mu.Unlock()
	if w.a.queue.ShuttingDown() {
		return
	}
	ns, name, _ := cache.SplitMetaNamespaceKey(key)
	svc, err := w.a.svcs.Services(ns).Get(name)
	if err != nil || !w.waiting(svc) {
		return
	}
	if !w.emitter(key) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	msg := unassignedMessage(svc, w.ccmState(ctx), w.after)
	w.mu.Lock()
	w.warned[key] = true
	w.mu.Unlock()
	w.a.log.Info("Service has no address yet", "service", key, "why", msg)
	w.a.rec.Event(svc, v1.EventTypeWarning, ReasonNoAddressAssigned, msg)
}

// emitter reports whether this node writes the Event for key: the first
// of the candidate nodes in a hash order of the key (all agents compute
// the same order from the same view).
func (w *unassignedWatch) emitter(key string) bool {
	var nodes []string
	if w.a.o.Mode == ModeARP && w.a.o.Elector != nil {
		nodes = w.a.o.Elector.AliveNodes()
	} else if list, err := w.a.nodes.List(labels.Everything()); err == nil {
		for _, n := range list {
			if nodeReady(n) && !excluded(n) {
				nodes = append(nodes, n.Name)
			}
		}
	}
	if !slices.Contains(nodes, w.a.o.NodeName) {
		nodes = append(nodes, w.a.o.NodeName)
	}
	return firstByHash(key, nodes) == w.a.o.NodeName
}

func nodeReady(n *v1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == v1.NodeReady {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}

// firstByHash returns the node with the highest hash of key+node.
func firstByHash(key string, nodes []string) string {
	best, bestH := "", uint64(0)
	for _, n := range nodes {
		h := fnv.New64a()
		_, _ = h.Write([]byte(key + "\x00" + n))
		if s := h.Sum64(); best == "" || s > bestH || (s == bestH && n < best) {
			best, bestH = n, s
		}
	}
	return best
}

// ccmState says whether a vip-ccm (or kube-vip-cloud-provider) leader
// Lease is held: "running", "missing" or "unknown: <why>".
func (w *unassignedWatch) ccmState(ctx context.Context) string {
	var why []string
	for _, name := range ccmLeases {
		l, err := w.a.o.Client.CoordinationV1().Leases(metav1.NamespaceSystem).Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			continue
		case err != nil:
			why = append(why, err.Error())
			continue
		}
		if leaseHeld(l, w.now()) {
			return "running"
		}
	}
	if len(why) > 0 {
		return "unknown: " + why[0]
	}
	return "missing"
}

func leaseHeld(l *coordinationv1.Lease, now time.Time) bool {
	if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" || l.Spec.RenewTime == nil {
		return false
	}
	d := 15 * time.Second
	if l.Spec.LeaseDurationSeconds != nil {
		d = time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second
	}
	return now.Sub(l.Spec.RenewTime.Time) <= 2*d
}

// unassignedMessage is the Event text for svc.
func unassignedMessage(svc *v1.Service, ccm string, after time.Duration) string {
	want := "an address from the pools"
	if req, err := lbsvc.Requested(svc); err == nil {
		var s []string
		for _, a := range req.Addrs {
			s = append(s, a.String())
		}
		if req.DHCP {
			s = append(s, "0.0.0.0 (DHCP)")
		}
		if len(s) > 0 {
			want = strings.Join(s, ",")
		}
	}
	msg := fmt.Sprintf("requests %s but has no address in status.loadBalancer.ingress after %v; vip-agent announces only the status, which vip-ccm writes", want, after)
	switch {
	case ccm == "missing":
		return msg + ": no vip-ccm is running (no leader Lease kube-system/vip-ccm); install deploy/ccm"
	case ccm == "running":
		return msg + ": vip-ccm is running, see its Events on this Service"
	default:
		return msg + " (whether vip-ccm runs is " + ccm + ")"
	}
}
