package ccmtest

import (
	"context"
	"slices"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
)

// Timeouts for the waits of the feature tests. The machine is small and
// shared, so they are generous; the tests are fast when things work.
const (
	assignTimeout = 45 * time.Second
	eventTimeout  = 45 * time.Second
	// pendingFor is how long a Service must stay without an address to count
	// as pending (longer than the --retry-after the tests use).
	pendingFor = 5 * time.Second
)

// tctx is a context bound to the test.
func tctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func create(t *testing.T, cs kubernetes.Interface, svc *v1.Service) *v1.Service {
	t.Helper()
	ctx := tctx(t)
	if err := EnsureNamespace(ctx, cs, svc.Namespace); err != nil {
		t.Fatal(err)
	}
	out, err := cs.CoreV1().Services(svc.Namespace).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create service %s/%s: %v", svc.Namespace, svc.Name, err)
	}
	return out
}

func waitIPs(t *testing.T, cs kubernetes.Interface, ns, name string, n int) []string {
	t.Helper()
	ips, err := WaitIngress(tctx(t), cs, ns, name, n, assignTimeout)
	if err != nil {
		t.Fatal(err)
	}
	return ips
}

func waitIP(t *testing.T, cs kubernetes.Interface, ns, name string) string {
	t.Helper()
	ips := waitIPs(t, cs, ns, name, 1)
	if len(ips) != 1 {
		t.Fatalf("service %s/%s: want one address, got %v", ns, name, ips)
	}
	return ips[0]
}

func wantIP(t *testing.T, cs kubernetes.Interface, ns, name, want string) {
	t.Helper()
	if got := waitIP(t, cs, ns, name); got != want {
		t.Errorf("service %s/%s got %s, want %s", ns, name, got, want)
	}
}

func waitEvent(t *testing.T, cs kubernetes.Interface, ns, kind, name, typ, reason string) *v1.Event {
	t.Helper()
	ev, err := WaitEvent(tctx(t), cs, ns, kind, name, typ, reason, eventTimeout)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// assertPending checks that the Service has no address now and for d.
func assertPending(t *testing.T, cs kubernetes.Interface, ns, name string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		svc, err := cs.CoreV1().Services(ns).Get(tctx(t), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if ips := IngressIPs(svc); len(ips) > 0 {
			t.Fatalf("service %s/%s should stay pending, got %v", ns, name, ips)
		}
		if time.Now().After(deadline) {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// waitGone waits until the Service no longer exists (its finalizer was
// removed).
func waitGone(t *testing.T, cs kubernetes.Interface, ns, name string) {
	t.Helper()
	deadline := time.Now().Add(assignTimeout)
	for {
		svc, err := cs.CoreV1().Services(ns).Get(tctx(t), name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return
		}
		if time.Now().After(deadline) {
			fin := []string{}
			if svc != nil {
				fin = svc.Finalizers
			}
			t.Fatalf("service %s/%s still exists (finalizers %v, err %v)", ns, name, fin, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func deleteSvc(t *testing.T, cs kubernetes.Interface, ns, name string) {
	t.Helper()
	if err := cs.CoreV1().Services(ns).Delete(tctx(t), name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitGone(t, cs, ns, name)
}

// createNode registers a Node the way a kubelet with
// --cloud-provider=external does: with the uninitialized taint when tainted,
// and with the given addresses in its status.
func createNode(t *testing.T, cs kubernetes.Interface, name string, tainted bool, addrs ...v1.NodeAddress) *v1.Node {
	t.Helper()
	ctx := tctx(t)
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{v1.LabelHostname: name}}}
	if tainted {
		n.Spec.Taints = []v1.Taint{{Key: "node.cloudprovider.kubernetes.io/uninitialized", Value: "true", Effect: v1.TaintEffectNoSchedule}}
	}
	out, err := cs.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The cloud-node controller may update the Node meanwhile.
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Status.Addresses = addrs
		cur.Status.Conditions = []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionTrue,
			LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now(), Reason: "KubeletReady"}}
		out, err = cs.CoreV1().Nodes().UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// noDuplicates fails the test when two Services of the list hold one
// address.
func noDuplicates(t *testing.T, svcs []v1.Service) {
	t.Helper()
	if d := Duplicates(svcs); len(d) > 0 {
		n := 0
		for ip, hs := range d {
			if n++; n <= 10 {
				t.Errorf("address %s held by %v", ip, hs)
			}
		}
		t.Fatalf("%d duplicated addresses", len(d))
	}
}
