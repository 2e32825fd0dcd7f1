package agent

import (
	"testing"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/vip-lb/vip/pkg/lbsvc"
)

func TestGoneReason(t *testing.T) {
	now := metav1.Now()
	other := "other.example/lb"
	lb := func(mod func(*v1.Service)) *v1.Service {
		s := &v1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns"},
			Spec:       v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer},
		}
		if mod != nil {
			mod(s)
		}
		return s
	}
	notFound := apierrors.NewNotFound(schema.GroupResource{Resource: "services"}, "web")
	for _, tc := range []struct {
		name string
		svc  *v1.Service
		err  error
		want string
	}{
		{"served", lb(nil), nil, ""},
		{"deleted", nil, notFound, "the Service was deleted"},
		{"no object and no error", nil, nil, "the Service was deleted"},
		{"terminating", lb(func(s *v1.Service) {
			s.DeletionTimestamp = &now
			s.Finalizers = []string{"service.kubernetes.io/load-balancer-cleanup"}
		}), nil, "the Service is being deleted"},
		{"terminating and no longer a load balancer", lb(func(s *v1.Service) {
			s.DeletionTimestamp = &now
			s.Spec.Type = v1.ServiceTypeClusterIP
		}), nil, "the Service is being deleted"},
		{"ClusterIP", lb(func(s *v1.Service) { s.Spec.Type = v1.ServiceTypeClusterIP }), nil,
			"the Service no longer wants a load balancer"},
		{"ignored", lb(func(s *v1.Service) { s.Annotations = map[string]string{lbsvc.AnnotationIgnore: "true"} }), nil,
			"the Service no longer wants a load balancer"},
		{"other class", lb(func(s *v1.Service) { s.Spec.LoadBalancerClass = &other }), nil,
			"the Service no longer wants a load balancer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := goneReason(tc.svc, tc.err, lbsvc.ClassRule{}); got != tc.want {
				t.Fatalf("goneReason = %q, want %q", got, tc.want)
			}
		})
	}
}
