package election

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	coordv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"

	"github.com/vip-lb/vip/pkg/lbsvc"
)

// RoleFacts is the LabelRole value of the node Leases written by agents
// that run no layer-2 election (BGP mode). They have the heartbeat's name,
// vip-node-<node>, and carry the same facts (vip.io/addresses,
// vip.io/gateways, vip.io/ready), so vip-ccm reads them alike; they are not
// heartbeats, and the layer-2 election ignores them.
const RoleFacts = "node-facts"

// Defaults of FactsOptions.
const (
	DefaultFactsRenew = 30 * time.Second
	MinFactsRenew     = 10 * time.Second
	DefaultFactsCheck = time.Second
)

// FactsOptions configure a Facts publisher.
type FactsOptions struct {
	Client    kubernetes.Interface
	Namespace string // the agent namespace
	NodeName  string
	// Ready reports whether the agent has synced (vip.io/ready); nil =
	// always.
	Ready func() bool
	// Renew is how often the Lease is written when nothing changed
	// (default 30s, at least 10s): the facts only change when the node's
	// addresses do, so nothing needs the layer-2 heartbeat's rate.
	Renew time.Duration
	// Check is how often the facts are compared with what was written
	// (default 1s; a comparison in memory, no request).
	Check  time.Duration
	Clock  clock.WithTicker
	Logger logr.Logger
}

// Facts keeps this node's Lease vip-node-<node> carrying the facts vip-ccm
// never hands out as Service addresses: it is written when a fact changes
// and renewed every Renew, nothing more. Publish has Elector.Publish's
// signature, so agent.PublishNodeInfo feeds either.
type Facts struct {
	o FactsOptions

	mu      sync.Mutex
	values  map[string]string // published, without ready
	cur     *coordv1.Lease    // as last written; nil = read it first
	written map[string]string // facts on cur
	last    time.Time         // last successful write
	retryAt time.Time         // after a failed write: not before
	backoff time.Duration

	rounds atomic.Uint64 // comparison rounds done (tests)
	writes atomic.Uint64 // successful writes (tests)
}

// NewFacts returns a publisher; Run writes.
func NewFacts(o FactsOptions) *Facts {
	if o.Renew <= 0 {
		o.Renew = DefaultFactsRenew
	}
	o.Renew = max(o.Renew, MinFactsRenew)
	if o.Check <= 0 {
		o.Check = DefaultFactsCheck
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Ready == nil {
		o.Ready = func() bool { return true }
	}
	return &Facts{o: o, values: map[string]string{}}
}

// Publish sets facts for the next write ("" removes one).
func (f *Facts) Publish(values map[string]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	maps.Copy(f.values, values)
}

// Run writes the Lease at once, then whenever a fact changed and every
// Renew, until ctx is done.
func (f *Facts) Run(ctx context.Context) {
	t := f.o.Clock.NewTicker(f.o.Check)
	defer t.Stop()
	for {
		f.round(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
	}
}

// want is what the Lease should carry now.
func (f *Facts) want() map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := map[string]string{lbsvc.AnnotationNodeReady: strconv.FormatBool(f.o.Ready())}
	for k, v := range f.values {
		if v != "" {
			w[k] = v
		}
	}
	return w
}

// round writes the Lease when the facts changed or Renew has passed.
func (f *Facts) round(ctx context.Context) {
	defer f.rounds.Add(1)
	want := f.want()
	now := f.o.Clock.Now()
	f.mu.Lock()
	due := f.cur == nil || !maps.Equal(want, f.written) || now.Sub(f.last) >= f.o.Renew
	waiting := now.Before(f.retryAt)
	cur, old := f.cur, f.written
	f.mu.Unlock()
	if !due || waiting {
		return
	}
	l, err := f.write(ctx, cur, old, want, now)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			f.cur = nil
		}
		f.backoff = min(max(2*f.backoff, f.o.Check), f.o.Renew)
		f.retryAt = now.Add(f.backoff)
		if ctx.Err() == nil {
			f.o.Logger.Info("cannot write the node's facts; will retry", "lease", f.o.Namespace+"/"+HeartbeatPrefix+f.o.NodeName,
				"retryIn", f.backoff, "err", err)
		}
		return
	}
	if !maps.Equal(want, old) {
		f.o.Logger.V(1).Info("node facts written", "lease", f.o.Namespace+"/"+HeartbeatPrefix+f.o.NodeName,
			"addresses", want[lbsvc.AnnotationNodeAddresses], "gateways", want[lbsvc.AnnotationNodeGateways],
			"ready", want[lbsvc.AnnotationNodeReady])
	}
	f.cur, f.written, f.last, f.backoff, f.retryAt = l, want, now, 0, time.Time{}
	f.writes.Add(1)
}

// write creates or updates the Lease with the facts want (removing those
// of old it no longer has).
func (f *Facts) write(ctx context.Context, cur *coordv1.Lease, old, want map[string]string, now time.Time) (*coordv1.Lease, error) {
	leases := f.o.Client.CoordinationV1().Leases(f.o.Namespace)
	name := HeartbeatPrefix + f.o.NodeName
	if cur == nil {
		got, err := leases.Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			l := &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: f.o.Namespace}}
			f.fill(l, nil, want, now)
			out, err := leases.Create(ctx, l, metav1.CreateOptions{})
			if err != nil {
				return nil, fmt.Errorf("creating node facts Lease %s/%s: %w", f.o.Namespace, name, err)
			}
			return out, nil
		case err != nil:
			return nil, fmt.Errorf("reading node facts Lease %s/%s: %w", f.o.Namespace, name, err)
		}
		cur, old = got, nil
	}
	l := cur.DeepCopy()
	f.fill(l, old, want, now)
	out, err := leases.Update(ctx, l, metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("writing node facts Lease %s/%s: %w", f.o.Namespace, name, err)
	}
	return out, nil
}

// fill sets the Lease's labels, facts and times. A Lease read back (old
// nil) loses the facts this node no longer has, and a layer-2 heartbeat's
// health URL: it is no heartbeat any more.
func (f *Facts) fill(l *coordv1.Lease, old, want map[string]string, now time.Time) {
	markManaged(l, RoleFacts)
	if old == nil {
		old = map[string]string{AnnotationHealth: "", lbsvc.AnnotationNodeAddresses: "", lbsvc.AnnotationNodeGateways: "", lbsvc.AnnotationNodeMACs: ""}
	}
	for k := range old {
		if _, ok := want[k]; !ok {
			annotate(l, k, "")
		}
	}
	for k, v := range want {
		annotate(l, k, v)
	}
	t := metav1.NewMicroTime(now)
	self := f.o.NodeName
	if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != self || l.Spec.AcquireTime == nil {
		l.Spec.HolderIdentity, l.Spec.AcquireTime = &self, &t
	}
	l.Spec.RenewTime = &t
	d := int32(3 * f.o.Renew / time.Second)
	l.Spec.LeaseDurationSeconds = &d
}
