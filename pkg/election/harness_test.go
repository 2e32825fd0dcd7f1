package election

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/vip-lb/vip/pkg/testbed"
)

// cluster runs Electors against a real API server, each driven by a tiny
// agent (a dirty set and one worker, as the real agent's workqueue), and
// checks that no Service is ever announced by two nodes at once.
type cluster struct {
	t        *testing.T
	env      *testbed.Env
	hbNS     string // heartbeat namespace
	svcNS    string // Service Lease namespace
	services []string
	opts     func(*Options)
	nodes    map[string]*agent

	// begin is closed by enqueueAll: the agents reconcile nothing before,
	// so a scenario starts with every node up.
	begin chan struct{}

	mu         sync.Mutex
	gone       map[string]bool            // deleted Services
	announcers map[string]map[string]bool // service -> announcing nodes
	since      map[string]time.Time       // service -> when its current announcer started
	violations []string
}

// agent is one node: its Elector, its connections and its announcements.
type agent struct {
	c      *cluster
	name   string
	e      *Elector
	cut    *cutDialer
	writes atomic.Int64 // non-GET requests sent
	cancel context.CancelFunc
	done   chan struct{}

	qmu     sync.Mutex
	dirty   map[string]bool
	flushes []chan struct{} // closed once everything enqueued before them is reconciled
	kick    chan struct{}
}

// newCluster prepares namespaces for a scenario; nodes start with start.
func newCluster(t *testing.T, env *testbed.Env, name string, services int, opts func(*Options)) *cluster {
	c := &cluster{t: t, env: env, hbNS: "hb-" + name, svcNS: "hb-" + name, opts: opts,
		nodes: map[string]*agent{}, begin: make(chan struct{}), gone: map[string]bool{}, announcers: map[string]map[string]bool{}, since: map[string]time.Time{}}
	admin := env.AdminClient()
	for _, ns := range []string{c.hbNS} {
		_, err := admin.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	for i := range services {
		c.services = append(c.services, fmt.Sprintf("svc-%d", i))
	}
	t.Cleanup(c.stopAll)
	return c
}

// key is the service key of a Service name.
func (c *cluster) key(svc string) string { return c.svcNS + "/" + svc }

// start starts the named nodes and waits until they all see each other.
func (c *cluster) start(names ...string) {
	for _, n := range names {
		c.startNode(n)
	}
	all := slices.Sorted(func(yield func(string) bool) {
		for n := range c.nodes {
			if !yield(n) {
				return
			}
		}
	})
	waitFor(c.t, 20*time.Second, "nodes see each other", func() bool {
		for _, a := range c.nodes {
			if !slices.Equal(a.e.AliveNodes(), all) {
				return false
			}
		}
		return true
	})
}

// startNode starts one node's Elector, health endpoint and worker.
func (c *cluster) startNode(name string) *agent {
	t := c.t
	a := &agent{c: c, name: name, cut: &cutDialer{}, dirty: map[string]bool{}, kick: make(chan struct{}, 1), done: make(chan struct{})}
	var handler atomic.Pointer[http.Handler]
	health := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := handler.Load(); h != nil {
			(*h).ServeHTTP(w, r)
		}
	}))
	t.Cleanup(health.Close)
	cfg := c.env.AdminConfig()
	cfg.Dial = a.cut.dial
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if r.Method != http.MethodGet {
				a.writes.Add(1)
			}
			return rt.RoundTrip(r)
		})
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	o := Options{
		Client: client, Namespace: c.hbNS, NodeName: name, Logger: testr.New(t).WithValues("on", name),
		HealthAddress: health.URL, Rebalance: true,
		OnServiceLeaseChange: func(ns, lease string) {
			if ns == c.svcNS {
				a.enqueue(lease[len(leasePrefix):])
			}
		},
		OnNodeChange: func(node string, alive bool) {
			if node == name && !alive {
				c.withdrawAll(name) // fenced or leaving: stop at once
			}
			a.enqueue(c.services...)
		},
	}
	if c.opts != nil {
		c.opts(&o)
	}
	a.e, err = New(o)
	if err != nil {
		t.Fatal(err)
	}
	h := a.e.HealthHandler()
	handler.Store(&h)
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	go func() {
		if err := a.e.Run(ctx); err != nil {
			t.Errorf("%s: Run: %v", name, err)
		}
	}()
	go a.work(ctx)
	if !a.e.WaitForSync(t.Context()) {
		t.Fatalf("%s: no sync", name)
	}
	c.mu.Lock()
	c.nodes[name] = a
	c.mu.Unlock()
	return a
}

// leasePrefix is the Lease name prefix of the scenarios' Services.
const leasePrefix = "kubevip-"

// enqueue marks Services for reconciliation.
func (a *agent) enqueue(svcs ...string) {
	a.qmu.Lock()
	for _, s := range svcs {
		a.dirty[s] = true
	}
	a.qmu.Unlock()
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// flush returns once every Service enqueued before the call has been
// reconciled (or the agent stopped): a positive barrier for checks that
// something did not happen.
func (a *agent) flush() {
	done := make(chan struct{})
	a.qmu.Lock()
	a.flushes = append(a.flushes, done)
	a.qmu.Unlock()
	select {
	case a.kick <- struct{}{}:
	default:
	}
	select {
	case <-done:
	case <-a.done:
	}
}

// work reconciles dirty Services until ctx is done.
func (a *agent) work(ctx context.Context) {
	defer close(a.done)
	select {
	case <-ctx.Done():
		return
	case <-a.c.begin:
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.kick:
		}
		a.qmu.Lock()
		todo := slices.Sorted(func(yield func(string) bool) {
			for s := range a.dirty {
				if !yield(s) {
					return
				}
			}
		})
		clear(a.dirty)
		flushes := a.flushes
		a.flushes = nil
		a.qmu.Unlock()
		for _, s := range todo {
			if ctx.Err() != nil {
				return
			}
			a.reconcile(ctx, s)
		}
		for _, f := range flushes {
			close(f)
		}
	}
}

// reconcile is the agent's layer 2 decision for one Service: withdraw
// before any release, announce only when told.
func (a *agent) reconcile(ctx context.Context, svc string) {
	c := a.c
	if a.e.Fenced() {
		c.withdraw(a.name, svc)
		return
	}
	if c.deleted(svc) {
		c.withdraw(a.name, svc)
		if err := a.e.Delete(ctx, c.svcNS, leasePrefix+svc); err != nil {
			time.AfterFunc(100*time.Millisecond, func() { a.enqueue(svc) })
		}
		return
	}
	res, err := a.e.Ensure(ctx, c.svcNS, leasePrefix+svc, c.key(svc), slices.Sorted(func(yield func(string) bool) {
		for n := range c.allNames() {
			if !yield(n) {
				return
			}
		}
	}))
	switch {
	case errors.Is(err, ErrShuttingDown):
		c.withdraw(a.name, svc)
		return
	case err != nil:
		time.AfterFunc(100*time.Millisecond, func() { a.enqueue(svc) })
		return
	case res.Release:
		c.withdraw(a.name, svc)
		if err := a.e.Release(ctx, c.svcNS, leasePrefix+svc, res.Successor); err != nil {
			time.AfterFunc(100*time.Millisecond, func() { a.enqueue(svc) })
		}
	case res.ShouldAnnounce:
		c.announce(a.name, svc)
	default:
		c.withdraw(a.name, svc)
	}
	if res.RequeueAfter > 0 {
		time.AfterFunc(res.RequeueAfter, func() { a.enqueue(svc) })
	}
}

// deleteService deletes a Service: every agent reconciles it.
func (c *cluster) deleteService(svc string) {
	c.mu.Lock()
	c.gone[svc] = true
	c.mu.Unlock()
	for _, a := range c.running() {
		a.enqueue(svc)
	}
}

// deleted reports whether svc was deleted.
func (c *cluster) deleted(svc string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gone[svc]
}

// allNames are every node ever started: the candidates of every Service.
func (c *cluster) allNames() map[string]bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]bool{}
	for n := range c.nodes {
		out[n] = true
	}
	return out
}

// announce records that node announces svc, and any overlap.
func (c *cluster) announce(node, svc string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	set := c.announcers[svc]
	if set == nil {
		set = map[string]bool{}
		c.announcers[svc] = set
	}
	if set[node] {
		return
	}
	for other := range set {
		c.violations = append(c.violations, fmt.Sprintf("%s announced by %s and %s", svc, other, node))
	}
	set[node] = true
	c.since[svc] = time.Now()
}

// withdraw records that node no longer announces svc.
func (c *cluster) withdraw(node, svc string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.announcers[svc], node)
}

// withdrawAll withdraws everything node announces.
func (c *cluster) withdrawAll(node string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, set := range c.announcers {
		delete(set, node)
	}
}

// owners maps each Service not deleted to its single announcer ("" when
// none or several).
func (c *cluster) owners() map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]string{}
	for _, s := range c.services {
		if c.gone[s] {
			continue
		}
		if set := c.announcers[s]; len(set) == 1 {
			for n := range set {
				out[s] = n
			}
		} else {
			out[s] = ""
		}
	}
	return out
}

// announcedBy counts the Services node announces.
func (c *cluster) announcedBy(node string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, set := range c.announcers {
		if _, ok := set[node]; ok {
			n++
		}
	}
	return n
}

// announcedSince returns when svc's current announcer started.
func (c *cluster) announcedSince(svc string) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.since[svc]
}

// checkNoOverlap fails the test if a Service was ever announced twice.
func (c *cluster) checkNoOverlap() {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, v := range c.violations {
		c.t.Error(v)
	}
}

// waitOwned waits until every Service has exactly one announcer and the
// running, unfenced nodes agree with the Leases.
func (c *cluster) waitOwned(d time.Duration) map[string]string {
	c.t.Helper()
	var owners map[string]string
	waitFor(c.t, d, "every Service owned once", func() bool {
		owners = c.owners()
		for _, s := range c.services {
			if c.deleted(s) {
				continue
			}
			if owners[s] == "" {
				return false
			}
			for _, a := range c.running() {
				if a.e.Fenced() {
					continue
				}
				if h, ok := a.e.Holder(c.svcNS, leasePrefix+s); !ok || h != owners[s] {
					return false
				}
			}
		}
		return true
	})
	return owners
}

// running lists the nodes whose Elector still runs.
func (c *cluster) running() []*agent {
	var out []*agent
	for _, a := range c.nodes {
		select {
		case <-a.done:
		default:
			out = append(out, a)
		}
	}
	return out
}

// crash stops a node without Shutdown: to the others it just goes silent.
func (c *cluster) crash(name string) {
	a := c.nodes[name]
	a.cancel()
	<-a.done
	c.withdrawAll(name)
}

// stopAll stops every node.
func (c *cluster) stopAll() {
	for _, a := range c.nodes {
		a.cancel()
		<-a.done
	}
}

// roundTripFunc adapts a function to http.RoundTripper.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// cutDialer dials normally until cut: then it closes every connection it
// made and refuses new ones, as a node cut off from the API server.
type cutDialer struct {
	mu    sync.Mutex
	cut   bool
	conns []net.Conn
}

func (d *cutDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cut {
		return nil, fmt.Errorf("dial %s: cut off", addr)
	}
	conn, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, network, addr)
	if err == nil {
		d.conns = append(d.conns, conn)
	}
	return conn, err
}

// setCut cuts or restores the connections.
func (d *cutDialer) setCut(cut bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cut = cut
	if cut {
		for _, c := range d.conns {
			_ = c.Close()
		}
		d.conns = nil
	}
}
