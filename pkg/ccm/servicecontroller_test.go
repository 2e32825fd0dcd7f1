package ccm

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"

	"github.com/vip-lb/vip/pkg/lbsvc"
)

const testClass = "kube-vip.io/kube-vip-class"

func withClass(c string) func(*v1.Service) {
	return func(s *v1.Service) { s.Spec.LoadBalancerClass = &c }
}

// scTest is a LoadBalancer and its ServiceController on a fake client.
type scTest struct {
	t      *testing.T
	ctx    context.Context
	lb     *LoadBalancer
	client kubernetes.Interface
	events *record.FakeRecorder // the controller's
	// lbEvents: the provider's (AddressAllocated, AddressInUse, ...).
	lbEvents *record.FakeRecorder
	sc       *ServiceController
}

func newSCTest(t *testing.T, rule lbsvc.ClassRule, all bool, pools string, svcs ...*v1.Service) *scTest {
	t.Helper()
	s := newIdleSCTest(t, rule, all, pools, svcs...)
	go s.sc.Run(s.ctx, 2)
	return s
}

// newIdleSCTest is newSCTest with the controller's queue filled but not
// worked: the test takes the keys itself (next).
func newIdleSCTest(t *testing.T, rule lbsvc.ClassRule, all bool, pools string, svcs ...*v1.Service) *scTest {
	t.Helper()
	opts := DefaultOptions()
	opts.Class = rule
	opts.RetryAfter = 50 * time.Millisecond
	objs := []any{&v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: opts.ConfigMapName, Namespace: opts.ConfigMapNamespace},
		Data: map[string]string{"cidr-global": pools}}}
	client := fake.NewClientset()
	for _, o := range objs {
		if _, err := client.CoreV1().ConfigMaps(opts.ConfigMapNamespace).Create(context.Background(), o.(*v1.ConfigMap), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range svcs {
		if _, err := client.CoreV1().Services(s.Namespace).Create(context.Background(), s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	lb := newLoadBalancer(opts, nil)
	stop := make(chan struct{})
	lbEvents := record.NewFakeRecorder(1000)
	lb.start(client, lbEvents, stop)
	f := informers.NewSharedInformerFactory(client, 0)
	lb.setInformers(f)
	rec := record.NewFakeRecorder(1000)
	sc := NewServiceController(lb, client, f.Core().V1().Services(), rec, all)
	f.Start(stop)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); close(stop) })
	return &scTest{t: t, ctx: ctx, lb: lb, client: client, events: rec, lbEvents: lbEvents, sc: sc}
}

// next waits for a key in the idle controller's queue, checks it is want
// and syncs it as a worker would, returning the sync's error.
func (s *scTest) next(want string) error {
	s.t.Helper()
	s.waitFor(want+" queued", func() bool { return s.sc.queue.Len() > 0 })
	key, _ := s.sc.queue.Get()
	defer s.sc.queue.Done(key)
	s.sc.queue.Forget(key)
	if key != want {
		s.t.Fatalf("queued %q, want %q", key, want)
	}
	return s.sc.sync(s.ctx, key)
}

// ips is the status of a Service of namespace default.
func (s *scTest) ips(name string) []string {
	var out []string
	for _, in := range s.get(name).Status.LoadBalancer.Ingress {
		out = append(out, in.IP)
	}
	return out
}

func (s *scTest) get(name string) *v1.Service {
	s.t.Helper()
	svc, err := s.client.CoreV1().Services("default").Get(s.ctx, name, metav1.GetOptions{})
	if err != nil {
		s.t.Fatal(err)
	}
	return svc
}

func (s *scTest) waitFor(what string, cond func() bool) {
	s.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			s.t.Fatalf("timed out: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// served: the Service has an address and the finalizer.
func (s *scTest) served(name string) bool {
	svc := s.get(name)
	return len(svc.Status.LoadBalancer.Ingress) == 1 && slices.Equal(svc.Finalizers, []string{FinalizerLoadBalancerCleanup})
}

func (s *scTest) untouched(name string) {
	s.t.Helper()
	if svc := s.get(name); len(svc.Status.LoadBalancer.Ingress) != 0 || len(svc.Finalizers) != 0 {
		s.t.Errorf("%s was touched: finalizers %v, status %v", name, svc.Finalizers, svc.Status.LoadBalancer)
	}
}

// drain returns the reasons of the Events recorded so far.
func (s *scTest) drain() []string {
	var out []string
	for {
		select {
		case e := <-s.events.Events:
			out = append(out, strings.Fields(e)[1])
		default:
			return out
		}
	}
}

func (s *scTest) update(name string, mut func(*v1.Service)) {
	s.t.Helper()
	svc := s.get(name)
	mut(svc)
	if _, err := s.client.CoreV1().Services("default").Update(s.ctx, svc, metav1.UpdateOptions{}); err != nil {
		s.t.Fatal(err)
	}
}

func (s *scTest) held(name string) bool {
	_, ok, _ := s.lb.GetLoadBalancer(s.ctx, "", lbSvc("default", name))
	return ok
}

// TestServiceControllerScope: which Services the one controller serves,
// under each class rule; the others get no finalizer and no status.
func TestServiceControllerScope(t *testing.T) {
	for _, tc := range []struct {
		name              string
		rule              lbsvc.ClassRule
		served, untouched []string
	}{
		{"no class configured", lbsvc.ClassRule{}, []string{"plain"}, []string{"classed", "foreign", "ignored"}},
		{"class and unclassed", lbsvc.ClassRule{Name: testClass}, []string{"plain", "classed"}, []string{"foreign", "ignored"}},
		{"class only", lbsvc.ClassRule{Name: testClass, Only: true}, []string{"classed"}, []string{"plain", "foreign", "ignored"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSCTest(t, tc.rule, false, "10.0.0.0/28",
				lbSvc("default", "plain"), lbSvc("default", "classed", withClass(testClass)),
				lbSvc("default", "foreign", withClass("example.com/other")),
				lbSvc("default", "ignored", func(s *v1.Service) { s.Annotations = map[string]string{lbsvc.AnnotationIgnore: "true"} }))
			for _, n := range tc.served {
				s.waitFor(n+" served", func() bool { return s.served(n) })
			}
			// The others: a sync of each (as its queue entry would run it)
			// leaves it alone.
			for _, n := range tc.untouched {
				if err := s.sc.sync(s.ctx, "default/"+n); err != nil {
					t.Errorf("sync %s: %v", n, err)
				}
				s.untouched(n)
			}
		})
	}
}

// TestServiceControllerLifecycle: finalizer before the address, the stock
// controller's Events, type change and deletion release the address and
// drop finalizer and status; a failure is a SyncLoadBalancerFailed Warning.
func TestServiceControllerLifecycle(t *testing.T) {
	for _, all := range []bool{false, true} {
		t.Run(map[bool]string{false: "quiet", true: "all events"}[all], func(t *testing.T) {
			s := newSCTest(t, lbsvc.ClassRule{Name: testClass}, all, "10.0.0.4/31",
				lbSvc("default", "a"), lbSvc("default", "b", withClass(testClass)))
			s.waitFor("a and b served", func() bool { return s.served("a") && s.served("b") })
			wantEnsure := []string(nil)
			if all {
				wantEnsure = []string{ReasonEnsured, ReasonEnsured, ReasonEnsuring, ReasonEnsuring}
			}
			if got := s.drain(); !slices.Equal(sorted(got), wantEnsure) {
				t.Errorf("Events %v, want %v", got, wantEnsure)
			}

			// The pool is exhausted: finalizer first, then a Warning, no status.
			if _, err := s.client.CoreV1().Services("default").Create(s.ctx, lbSvc("default", "c"), metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			s.waitFor("c gets the finalizer and a SyncLoadBalancerFailed", func() bool {
				return slices.Contains(s.get("c").Finalizers, FinalizerLoadBalancerCleanup) && slices.Contains(s.drain(), ReasonSyncFailed)
			})
			if st := s.get("c").Status.LoadBalancer; len(st.Ingress) != 0 {
				t.Errorf("c has status %v with the pool exhausted", st)
			}

			// Type change away from LoadBalancer (the API server clears the class).
			s.update("b", func(svc *v1.Service) { svc.Spec.Type, svc.Spec.LoadBalancerClass = v1.ServiceTypeClusterIP, nil })
			s.waitFor("b's finalizer and status removed", func() bool {
				svc := s.get("b")
				return len(svc.Finalizers) == 0 && len(svc.Status.LoadBalancer.Ingress) == 0
			})
			s.waitFor("b's address released", func() bool { return !s.held("b") })
			// Its address goes to c, which was waiting.
			s.waitFor("c served with the released address", func() bool { return s.served("c") })

			// Deletion with the finalizer: released, finalizer removed.
			s.update("a", func(svc *v1.Service) { now := metav1.Now(); svc.DeletionTimestamp = &now })
			s.waitFor("a's finalizer removed", func() bool { return len(s.get("a").Finalizers) == 0 })
			s.waitFor("a's address released", func() bool { return !s.held("a") })
			got := s.drain()
			for _, want := range []string{ReasonDeleting, ReasonDeleted} {
				if n := countOf(got, want); n != 2 {
					t.Errorf("%d %s Events, want 2 (b, a): %v", n, want, got)
				}
			}

			// Deletion without the finalizer (removed by hand): released.
			if err := s.client.CoreV1().Services("default").Delete(s.ctx, "c", metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			s.waitFor("c's address released", func() bool { return !s.held("c") })
		})
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func countOf(s []string, v string) int {
	n := 0
	for _, x := range s {
		if x == v {
			n++
		}
	}
	return n
}
