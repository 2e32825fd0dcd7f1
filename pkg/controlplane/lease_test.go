package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/vip-lb/vip/pkg/announce"

	"github.com/vip-lb/vip/pkg/announce/fake"
	"github.com/vip-lb/vip/pkg/testbed"
)

// tracker watches the announcements of every node and records any moment
// at which two nodes announce the VIP together.
type tracker struct {
	mu       sync.Mutex
	holders  map[string]bool
	log      []string
	overlaps []string
	since    map[string]time.Time
}

func newTracker() *tracker {
	return &tracker{holders: map[string]bool{}, since: map[string]time.Time{}}
}

func (tr *tracker) set(node string, on bool) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.holders[node] = on
	tr.log = append(tr.log, fmt.Sprintf("%s %s %v", time.Now().Format("15:04:05.000"), node, on))
	if on {
		tr.since[node] = time.Now()
		for n, h := range tr.holders {
			if h && n != node {
				tr.overlaps = append(tr.overlaps, node+" announced while "+n+" did")
			}
		}
	}
}

func (tr *tracker) holder() (string, time.Time) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for n, h := range tr.holders {
		if h {
			return n, tr.since[n]
		}
	}
	return "", time.Time{}
}

func (tr *tracker) check(t *testing.T) {
	t.Helper()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(tr.overlaps) > 0 {
		t.Errorf("two announcers at once: %v\n%v", tr.overlaps, tr.log)
	}
}

// trackedAnnouncer reports its node's announcements to a tracker.
type trackedAnnouncer struct {
	*fake.Announcer
	node string
	tr   *tracker
}

func (a trackedAnnouncer) Announce(ctx context.Context, owner string, vip netip.Addr, iface string) error {
	if err := a.Announcer.Announce(ctx, owner, vip, iface); err != nil {
		return err
	}
	a.tr.set(a.node, true)
	return nil
}

func (a trackedAnnouncer) Withdraw(ctx context.Context, owner string, vip netip.Addr) error {
	a.tr.set(a.node, false)
	return a.Announcer.Withdraw(ctx, owner, vip)
}

var _ announce.Announcer = trackedAnnouncer{}

// node is one agent's control-plane part against the shared API server.
type node struct {
	name    string
	cut     atomic.Bool  // every request fails (a network partition)
	unready atomic.Bool  // /readyz fails but the API works
	leases  atomic.Int64 // Lease requests that reached the API server
	c       *Controller
	stop    context.CancelFunc
	done    chan struct{}
}

func (n *node) kill() { n.stop(); <-n.done }

type cluster struct {
	env   *testbed.Env
	tr    *tracker
	nodes []*node
}

func newCluster(t *testing.T, names ...string) *cluster {
	t.Helper()
	env := testbed.Start(t)
	cl := &cluster{env: env, tr: newTracker()}
	for _, name := range names {
		cl.start(t, name)
	}
	t.Cleanup(func() {
		for _, n := range cl.nodes {
			n.stop()
			<-n.done
		}
	})
	return cl
}

func (cl *cluster) start(t *testing.T, name string) *node {
	t.Helper()
	n := &node{name: name, done: make(chan struct{})}
	cfg := cl.env.AdminConfig()
	cfg.Timeout = time.Second
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return rtFunc(func(r *http.Request) (*http.Response, error) {
			if n.cut.Load() {
				return nil, errors.New("dial tcp: connect: no route to host")
			}
			if strings.Contains(r.URL.Path, "/leases") {
				n.leases.Add(1)
			}
			return rt.RoundTrip(r)
		})
	})
	client := kubernetes.NewForConfigOrDie(cfg)
	probe := readyzProbe(client, time.Second)
	c, err := New(Options{
		Client: client, Identity: name, Address: "10.9.0.10", Interface: "eth0",
		Announcer: trackedAnnouncer{fake.New(), name, cl.tr},
		Probe: func(ctx context.Context) error {
			if n.unready.Load() {
				return errors.New("readyz: etcd failed")
			}
			return probe(ctx)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	n.c = c
	ctx, cancel := context.WithCancel(context.Background())
	n.stop = cancel
	go func() {
		defer close(n.done)
		_ = c.Run(ctx)
	}()
	cl.nodes = append(cl.nodes, n)
	return n
}

type rtFunc func(*http.Request) (*http.Response, error)

func (f rtFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// settle waits until each of nodes made three more Lease requests, so each
// has seen (or renewed) the Lease at least twice since the call: the
// barrier for checks that the holder did not move.
func settle(t *testing.T, nodes ...*node) {
	t.Helper()
	from := make([]int64, len(nodes))
	for i, n := range nodes {
		from[i] = n.leases.Load()
	}
	for i, n := range nodes {
		eventually(t, time.Minute, n.name+"'s Lease requests", func() bool { return n.leases.Load() >= from[i]+3 })
	}
}

func (cl *cluster) node(name string) *node {
	for _, n := range cl.nodes {
		if n.name == name {
			return n
		}
	}
	return nil
}

// waitHolder waits for a holder other than not and returns it with the
// time it started announcing.
func (cl *cluster) waitHolder(t *testing.T, not string, timeout time.Duration) (*node, time.Time) {
	t.Helper()
	var h string
	var at time.Time
	eventually(t, timeout, "a holder other than "+not, func() bool {
		h, at = cl.tr.holder()
		return h != "" && h != not
	})
	return cl.node(h), at
}

func TestElection(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver")
	}
	cl := newCluster(t, "cp1", "cp2", "cp3")
	defer cl.tr.check(t)
	leader, _ := cl.waitHolder(t, "", 30*time.Second)
	t.Logf("first holder %s", leader.name)

	t.Run("steady", func(t *testing.T) {
		settle(t, cl.nodes...)
		if h, _ := cl.tr.holder(); h != leader.name {
			t.Fatalf("holder moved from %s to %q without a failure", leader.name, h)
		}
		l, err := cl.env.AdminClient().CoordinationV1().Leases("kube-system").Get(context.Background(), DefaultLeaseName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if *l.Spec.HolderIdentity != leader.name || *l.Spec.LeaseDurationSeconds != 2 {
			t.Errorf("Lease holder %q duration %d, want %s and 2 (1.5s rounded up)", *l.Spec.HolderIdentity, *l.Spec.LeaseDurationSeconds, leader.name)
		}
	})

	t.Run("graceful stop releases", func(t *testing.T) {
		t0 := time.Now()
		leader.kill()
		next, at := cl.waitHolder(t, leader.name, time.Minute)
		d := at.Sub(t0)
		t.Logf("%s stopped, %s announcing after %v", leader.name, next.name, d.Round(time.Millisecond))
		// A released Lease is taken at once; only an unreleased one waits
		// for expiry. No wall-clock limit here: the stopped leader must have
		// released it.
		if r := testutil.ToFloat64(leader.c.metrics.transitions.WithLabelValues("released")); r < 1 {
			t.Errorf("%s stopped without releasing the Lease", leader.name)
		}
		leader = next
	})

	t.Run("partition", func(t *testing.T) {
		t0 := time.Now()
		leader.cut.Store(true)
		next, at := cl.waitHolder(t, leader.name, time.Minute)
		d := at.Sub(t0)
		t.Logf("%s cut off, %s announcing after %v", leader.name, next.name, d.Round(time.Millisecond))
		if leader.c.Announced().IsValid() {
			t.Errorf("%s still announces while cut off", leader.name)
		}
		old := leader
		leader = next
		old.cut.Store(false)
		settle(t, old, leader)
		if h, _ := cl.tr.holder(); h != leader.name {
			t.Errorf("holder moved to %q when %s came back", h, old.name)
		}
	})

	t.Run("API server not ready", func(t *testing.T) {
		t0 := time.Now()
		leader.unready.Store(true)
		next, at := cl.waitHolder(t, leader.name, time.Minute)
		d := at.Sub(t0)
		t.Logf("%s's API server unready, %s announcing after %v", leader.name, next.name, d.Round(time.Millisecond))
		// Two failed probes (250ms apart), a withdrawal and a release.
		if r := testutil.ToFloat64(leader.c.metrics.transitions.WithLabelValues("released")); r < 1 {
			t.Errorf("%s gave the Lease up without releasing it", leader.name)
		}
		if leader.c.Announced().IsValid() {
			t.Errorf("%s still announces with its API server unready", leader.name)
		}
		leader.unready.Store(false)
	})
}
