package controlplane

import (
	"context"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/vip-lb/vip/pkg/announce/fake"
	"github.com/vip-lb/vip/pkg/lbsvc"
	"github.com/vip-lb/vip/pkg/testbed"
)

// lines collects log lines from several goroutines.
type lines struct {
	mu sync.Mutex
	l  []string
}

func (l *lines) add(prefix, args string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.l = append(l.l, prefix+" "+args)
}

func (l *lines) count(sub string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.l {
		if strings.Contains(s, sub) {
			n++
		}
	}
	return n
}

// TestDeniedCredentialsAreExplained is the first control-plane node of
// kubeadm 1.29+ started with admin.conf, whose group is bound to
// cluster-admin only later: the API server refuses every Lease request.
// The agent says so (DeniedHint, once, not on every retry), sets
// vip_agent_controlplane_credentials_denied and holds nothing. Once RBAC
// allows the Lease it takes it, announces the VIP and clears the gauge.
func TestDeniedCredentialsAreExplained(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver")
	}
	env := testbed.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const ns, sa = "kube-system", "cp-agent"
	tok, err := env.ServiceAccountToken(ctx, ns, sa)
	if err != nil {
		t.Fatal(err)
	}
	logs := &lines{}
	ann := fake.New()
	vip := netip.MustParseAddr("10.9.0.10")
	// refused counts the API server's refusals of Lease requests: the
	// barrier for "the hint is not repeated on every retry".
	var refused atomic.Int64
	cfg := env.TokenConfig(tok)
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			resp, err := rt.RoundTrip(r)
			if err == nil && resp.StatusCode == http.StatusForbidden && strings.Contains(r.URL.Path, "/leases") {
				refused.Add(1)
			}
			return resp, err
		})
	}
	c, err := New(Options{
		Client: kubernetes.NewForConfigOrDie(cfg), Identity: "cp1",
		Address: vip.String(), Interface: "eth0", Announcer: ann,
		Probe:      func(context.Context) error { return nil },
		Logger:     funcr.New(logs.add, funcr.Options{}),
		Registerer: prometheus.NewRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.Run(runCtx)
	}()
	defer func() { stop(); <-done }()

	eventually(t, 30*time.Second, "the refused credentials explained in the log", func() bool {
		return logs.count(DeniedHint) > 0
	})
	if got := testutil.ToFloat64(c.metrics.denied); got != 1 {
		t.Errorf("vip_agent_controlplane_credentials_denied = %v while refused, want 1", got)
	}
	// Three more refused Lease requests (at least two of them handled):
	// the hint is not repeated on every retry.
	from := refused.Load()
	eventually(t, time.Minute, "three more refused Lease requests", func() bool { return refused.Load() >= from+3 })
	if n := logs.count(DeniedHint); n != 1 {
		t.Errorf("the hint was logged %d times over %d refused requests, want once (at most every %v)", n, refused.Load(), deniedLogEvery)
	}
	if held := ann.Held(); len(held) != 0 {
		t.Fatalf("announced %v without the Lease", held)
	}

	// What kubeadm's cluster-admins binding does for admin.conf, narrowed
	// to Leases.
	admin := env.AdminClient()
	_, err = admin.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "cp-agent"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"},
			Verbs: []string{"get", "list", "watch", "create", "update"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = admin.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "cp-agent"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "cp-agent"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: ns}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	granted := time.Now()
	eventually(t, 60*time.Second, "the VIP announced once the Lease is allowed", func() bool {
		return slices.Contains(ann.Held(), vip)
	})
	t.Logf("VIP announced %v after the binding", time.Since(granted).Round(time.Millisecond))
	l, err := admin.CoordinationV1().Leases(ns).Get(ctx, DefaultLeaseName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h := l.Spec.HolderIdentity; h == nil || *h != "cp1" {
		t.Errorf("Lease holder %v, want cp1", h)
	}
	// The holder publishes the VIP for vip-ccm, which never hands it out.
	if got := l.Annotations[lbsvc.AnnotationControlPlaneAddress]; got != vip.String() {
		t.Errorf("Lease annotation %s = %q, want %s", lbsvc.AnnotationControlPlaneAddress, got, vip)
	}
	eventually(t, time.Minute, "the gauge cleared", func() bool { return testutil.ToFloat64(c.metrics.denied) == 0 })
	if logs.count("accepts this node's credentials for the control-plane Lease again") != 1 {
		t.Error("no log line saying the credentials work again")
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
