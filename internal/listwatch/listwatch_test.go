package listwatch

import (
	"context"
	"errors"
	"net/http"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
)

type flakyRT struct {
	fails, calls int
}

func (f *flakyRT) RoundTrip(*http.Request) (*http.Response, error) {
	f.calls++
	if f.calls <= f.fails {
		return nil, errors.New("dial tcp 10.0.0.1:6443: connect: connection refused")
	}
	return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody}, nil
}

func TestRetryListWatch(t *testing.T) {
	for _, tc := range []struct {
		method, url string
		retried     bool
	}{
		{http.MethodGet, "https://api/api/v1/services?limit=500&resourceVersion=0", true},
		{http.MethodGet, "https://api/apis/coordination.k8s.io/v1/leases?allowWatchBookmarks=true&resourceVersion=12&watch=true", true},
		{http.MethodGet, "https://api/apis/coordination.k8s.io/v1/namespaces/a/leases/b", false},
		{http.MethodPut, "https://api/apis/coordination.k8s.io/v1/namespaces/a/leases/b", false},
	} {
		rt := &flakyRT{fails: 2}
		req, _ := http.NewRequest(tc.method, tc.url, nil)
		resp, err := Retry(rt).RoundTrip(req)
		if tc.retried {
			if err != nil || resp.StatusCode != http.StatusOK || rt.calls != 3 {
				t.Errorf("%s %s: err %v, calls %d; want success after 3 calls", tc.method, tc.url, err, rt.calls)
			}
		} else if err == nil || rt.calls != 1 {
			t.Errorf("%s %s: err %v, calls %d; want the first error, not retried", tc.method, tc.url, err, rt.calls)
		}
	}
}

func TestRetryListWatchStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*Interval/2)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://api/api/v1/nodes?watch=true", nil)
	// It returns at all (the test's own timeout catches a retry loop that
	// ignores the context), with an error, and only once the context ended.
	_, err := Retry(&flakyRT{fails: 1 << 30}).RoundTrip(req)
	if err == nil || ctx.Err() == nil {
		t.Fatalf("err %v, context %v; want the error once the context ends", err, ctx.Err())
	}
}

func TestSlim(t *testing.T) {
	mf := []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply}}
	node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n", ManagedFields: mf, Labels: map[string]string{"a": "b"}},
		Status: v1.NodeStatus{Images: []v1.ContainerImage{{Names: []string{"x"}}}, Addresses: []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "10.0.0.1"}}}}
	svc := &v1.Service{ObjectMeta: metav1.ObjectMeta{Name: "s", ManagedFields: mf, Annotations: map[string]string{"k": "v"}}}
	for _, tc := range []struct {
		name string
		in   any
	}{
		{"node", node},
		{"service", svc},
		{"tombstone", cache.DeletedFinalStateUnknown{Key: "default/s", Obj: svc.DeepCopy()}},
		{"not an object", "x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := Slim(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if d, ok := out.(cache.DeletedFinalStateUnknown); ok {
				out = d.Obj
			}
			if m, err := meta.Accessor(out); err == nil && m.GetManagedFields() != nil {
				t.Errorf("managedFields kept: %v", m.GetManagedFields())
			}
		})
	}
	if node.Status.Images != nil || len(node.Status.Addresses) != 1 || node.Labels["a"] != "b" {
		t.Errorf("node after Slim: %+v", node)
	}
	if svc.Annotations["k"] != "v" {
		t.Errorf("service after Slim: %+v", svc)
	}
}
