package lbsvc

import (
	"errors"
	"net/netip"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// FuzzRequested feeds arbitrary address requests (annotation and
// spec.loadBalancerIP): no panic; a refusal wraps ErrBadRequest; an accepted
// request holds at most one valid, unzoned address per family and never
// 0.0.0.0 among the static ones.
func FuzzRequested(f *testing.F) {
	for _, s := range [][2]string{
		{"10.0.0.1", ""}, {"10.0.0.1,fd00::1", ""}, {"0.0.0.0", ""}, {"", "10.0.0.2"}, {"", "0.0.0.0"},
		{"10.0.0.1,10.0.0.2", ""}, {"fe80::1%eth0", ""}, {"::ffff:10.0.0.1, 10.0.0.1", ""}, {" , ,", "x"},
		{"0.0.0.0,fd00::1", ""}, {"224.0.0.1", ""},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, ann, spec string) {
		svc := &v1.Service{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{AnnotationLoadBalancerIPs: ann}},
			Spec: v1.ServiceSpec{LoadBalancerIP: spec}}
		req, err := Requested(svc)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("error %v does not wrap ErrBadRequest", err)
			}
			return
		}
		if len(req.Addrs) > 2 {
			t.Fatalf("%d addresses accepted", len(req.Addrs))
		}
		fams := map[bool]bool{}
		for _, a := range req.Addrs {
			if !a.IsValid() || a.Zone() != "" || a.Is4In6() || a == netip.IPv4Unspecified() {
				t.Fatalf("accepted %v", a)
			}
			if fams[a.Is4()] {
				t.Fatalf("two addresses of one family: %v", req.Addrs)
			}
			fams[a.Is4()] = true
		}
	})
}
