package ccm

import (
	"context"
	"errors"
	"strings"
	"testing"

	coordv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cloud-provider/api"

	"github.com/vip-lb/vip/pkg/lbsvc"
)

func dhcpSvc(ns, name string, mut ...func(*v1.Service)) *v1.Service {
	return lbSvc(ns, name, append([]func(*v1.Service){func(s *v1.Service) {
		s.Annotations = map[string]string{lbsvc.AnnotationLoadBalancerIPs: "0.0.0.0"}
	}}, mut...)...)
}

func dhcpLease(ns, svc string, ann map[string]string) *coordv1.Lease {
	a := map[string]string{lbsvc.AnnotationLeaseService: ns + "/" + svc}
	for k, v := range ann {
		a[k] = v
	}
	return &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{
		Name: lbsvc.DHCPLeaseName(ns, svc), Namespace: "kube-system", Annotations: a,
		Labels: map[string]string{lbsvc.LabelDHCP: "true", lbsvc.LabelLeaseService: svc, lbsvc.LabelLeaseRole: lbsvc.LeaseRoleService},
	}}
}

// forgedDHCPLease is a Lease named for svc but recording another Service.
func forgedDHCPLease(ns, svc, other string, ann map[string]string) *coordv1.Lease {
	l := dhcpLease(ns, svc, ann)
	l.Annotations[lbsvc.AnnotationLeaseService] = ns + "/" + other
	return l
}

func TestDHCPRecordReachesStatus(t *testing.T) {
	node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"},
		Status: v1.NodeStatus{Addresses: []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "10.77.0.11"}}}}
	for _, tc := range []struct {
		name    string
		objs    []runtime.Object
		svc     *v1.Service
		want    string // address in status; "" = pending
		reason  string // the one Event expected
		warning bool
	}{
		{name: "no record yet", svc: dhcpSvc("default", "a"), reason: ReasonWaitingForDHCP},
		{name: "recorded lease", svc: dhcpSvc("default", "a"), want: "10.77.0.150", reason: ReasonAllocated,
			objs: []runtime.Object{dhcpLease("default", "a", map[string]string{lbsvc.AnnotationDHCPAddress: "10.77.0.150", lbsvc.AnnotationDHCPMAC: "02:00:00:00:00:01"})}},
		{name: "spec.loadBalancerIP form", svc: lbSvc("default", "b", func(s *v1.Service) { s.Spec.LoadBalancerIP = "0.0.0.0" }), want: "10.77.0.151", reason: ReasonAllocated,
			objs: []runtime.Object{dhcpLease("default", "b", map[string]string{lbsvc.AnnotationDHCPAddress: "10.77.0.151"})}},
		{name: "node address refused", svc: dhcpSvc("default", "a"), reason: ReasonDHCPAddressRejected, warning: true,
			objs: []runtime.Object{node, dhcpLease("default", "a", map[string]string{lbsvc.AnnotationDHCPAddress: "10.77.0.11"})}},
		{name: "loopback refused", svc: dhcpSvc("default", "a"), reason: ReasonDHCPAddressRejected, warning: true,
			objs: []runtime.Object{dhcpLease("default", "a", map[string]string{lbsvc.AnnotationDHCPAddress: "127.0.0.1"})}},
		{name: "garbage refused", svc: dhcpSvc("default", "a"), reason: ReasonDHCPAddressRejected, warning: true,
			objs: []runtime.Object{dhcpLease("default", "a", map[string]string{lbsvc.AnnotationDHCPAddress: "x"})}},
		{name: "another Service's address refused", svc: dhcpSvc("default", "a"), reason: ReasonDHCPAddressRejected, warning: true,
			objs: []runtime.Object{lbSvc("default", "other", withStatus("10.0.0.0")),
				dhcpLease("default", "a", map[string]string{lbsvc.AnnotationDHCPAddress: "10.0.0.0"})}},
		{name: "Lease of another Service refused", svc: dhcpSvc("default", "a"), reason: ReasonDHCPAddressRejected, warning: true,
			objs: []runtime.Object{forgedDHCPLease("default", "a", "x", map[string]string{lbsvc.AnnotationDHCPAddress: "10.77.0.152"})}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lb, rec := newTestLB(t, DefaultOptions(), map[string]string{"cidr-global": "10.0.0.0/30"}, tc.objs...)
			var got string
			var err error
			for range 3 { // the Event is given once however often it is asked
				var st *v1.LoadBalancerStatus
				st, err = lb.EnsureLoadBalancer(context.Background(), "c", tc.svc, nil)
				if st != nil {
					got = st.Ingress[0].IP
				}
			}
			if got != tc.want {
				t.Fatalf("status %q, err %v; want %q", got, err, tc.want)
			}
			var re *api.RetryError
			if tc.want == "" && !errors.As(err, &re) {
				t.Errorf("pending Service: err %v, want a RetryError", err)
			}
			if re != nil && (re.RetryAfter() <= 0 || re.RetryAfter() > dhcpWaitMax) {
				t.Errorf("retry after %v", re.RetryAfter())
			}
			evs := drain(rec)
			typ := "Normal "
			if tc.warning {
				typ = "Warning "
			}
			if len(evs) != 1 || !strings.HasPrefix(evs[0], typ+tc.reason) {
				t.Errorf("events %q, want one %s%s", evs, typ, tc.reason)
			}
		})
	}
}

func TestDHCPRetryBacksOff(t *testing.T) {
	lb, _ := newTestLB(t, DefaultOptions(), map[string]string{"cidr-global": "10.0.0.0/30"})
	svc := dhcpSvc("default", "a")
	var prev float64
	for i := range 8 {
		_, err := lb.EnsureLoadBalancer(context.Background(), "c", svc, nil)
		var re *api.RetryError
		if !errors.As(err, &re) {
			t.Fatalf("attempt %d: %v", i, err)
		}
		d := re.RetryAfter().Seconds()
		if d < prev || re.RetryAfter() > dhcpWaitMax {
			t.Fatalf("attempt %d: retry after %v (before %vs)", i, re.RetryAfter(), prev)
		}
		prev = d
	}
	if prev != dhcpWaitMax.Seconds() {
		t.Errorf("retry delay settles at %vs, want %v", prev, dhcpWaitMax)
	}
}

func TestDHCPMarkerPoolUsesRecord(t *testing.T) {
	lease := dhcpLease("home", "a", map[string]string{lbsvc.AnnotationDHCPAddress: "10.77.0.160"})
	// "old" got a pool address before the pools were edited.
	old := lbSvc("home", "old", withStatus("10.0.0.1"))
	lb, _ := newTestLB(t, DefaultOptions(), map[string]string{"cidr-home": "0.0.0.0/32", "cidr-global": "10.0.0.0/30"}, lease, old)
	svc := lbSvc("home", "a")
	for range 2 { // the second call must still follow the record
		ips, err := ensureIPs(t, lb, svc)
		if err != nil || len(ips) != 1 || ips[0] != "10.77.0.160" {
			t.Fatalf("marker pool with a record: %v %v", ips, err)
		}
	}
	// A Service of that namespace that already has a pool address keeps it.
	if ips, err := ensureIPs(t, lb, old); err != nil || ips[0] != "10.0.0.1" {
		t.Fatalf("pool address before the marker: %v %v", ips, err)
	}
}
