package agentapp

import (
	"strings"
	"testing"

	"github.com/go-logr/logr/funcr"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	k8stesting "k8s.io/client-go/testing"
)

// TestForbiddenEventsNamed: under an RBAC without the events rule (kube-vip's
// own) the agent names the missing rule once, however many Events fail; other
// errors are not reported as a missing rule.
func TestForbiddenEventsNamed(t *testing.T) {
	for _, tc := range []struct {
		name  string
		err   error
		lines int
	}{
		{"forbidden", apierrors.NewForbidden(schema.GroupResource{Resource: "events"}, "x", nil), 1},
		{"other error", apierrors.NewServiceUnavailable("etcd"), 0},
		{"accepted", nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := fake.NewClientset()
			client.PrependReactor("*", "events", func(k8stesting.Action) (bool, runtime.Object, error) {
				return tc.err != nil, nil, tc.err
			})
			var lines []string
			log := funcr.New(func(prefix, args string) { lines = append(lines, args) }, funcr.Options{})
			s := &forbiddenSink{EventSink: &typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")}, log: log}
			ev := &v1.Event{ObjectMeta: metav1.ObjectMeta{Name: "e", Namespace: "default"}}
			for range 3 {
				_, _ = s.Create(ev)
				_, _ = s.Patch(ev, []byte("{}"))
				_, _ = s.Update(ev)
			}
			n := 0
			for _, l := range lines {
				if strings.Contains(l, "missing RBAC rule") && strings.Contains(l, "resources [events]") {
					n++
				}
			}
			if n != tc.lines || len(lines) != tc.lines {
				t.Fatalf("log lines %q: want %d naming the events rule", lines, tc.lines)
			}
		})
	}
}
