package ccm

import (
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
)

// TestUnsupportedAnnotationWarning: one Warning per change of the
// unsupported kube-vip annotations, none for the supported ones.
func TestUnsupportedAnnotationWarning(t *testing.T) {
	rec := record.NewFakeRecorder(10)
	var w unsupportedWarner
	svc := func(ann map[string]string) *v1.Service {
		return &v1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "team", Annotations: ann}}
	}
	drain := func() []string {
		var out []string
		for {
			select {
			case e := <-rec.Events:
				out = append(out, e)
			default:
				return out
			}
		}
	}
	steps := []struct {
		ann  map[string]string
		want []string // substrings of the one Event expected; nil = none
	}{
		{map[string]string{"kube-vip.io/loadbalancerIPs": "10.0.0.5", "kube-vip.io/ignore": "false"}, nil},
		{map[string]string{"kube-vip.io/loadbalancerIPs": "10.0.0.5", "kube-vip.io/leaseName": "team/web", "kube-vip.io/egress": "true"},
			[]string{"kube-vip.io/egress (", "kube-vip.io/leaseName (", "vip-addr-"}},
		{map[string]string{"kube-vip.io/loadbalancerIPs": "10.0.0.6", "kube-vip.io/leaseName": "team/web", "kube-vip.io/egress": "true"}, nil},
		{map[string]string{"kube-vip.io/leaseName": "team/web", "kube-vip.io/egress": "true", "kube-vip.io/serviceVLAN": "200"}, []string{"serviceVLAN"}},
		{map[string]string{"kube-vip.io/loadbalancerHostname": "web", "kube-vip.io/ddns": "true", "kube-vip.io/egress-destination-ports": "tcp:80"},
			[]string{"loadbalancerHostname", "kube-vip.io/ddns", "egress-destination-ports"}},
	}
	for i, st := range steps {
		w.check(rec, svc(st.ann))
		got := drain()
		if st.want == nil {
			if len(got) > 0 {
				t.Fatalf("step %d: Events %v; want none", i, got)
			}
			continue
		}
		if len(got) != 1 || !strings.Contains(got[0], "Warning "+ReasonUnsupportedAnnotation) {
			t.Fatalf("step %d: Events %v; want one %s", i, got, ReasonUnsupportedAnnotation)
		}
		for _, s := range st.want {
			if !strings.Contains(got[0], s) {
				t.Errorf("step %d: %q lacks %q", i, got[0], s)
			}
		}
	}
}
