package lbsvc

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vip-lb/vip/pkg/ipam"
)

func TestParseDHCPRecord(t *testing.T) {
	exp := time.Date(2026, 11, 23, 15, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		ann     map[string]string
		ok      bool
		wantErr bool
		addr    string
	}{
		{name: "absent", ann: map[string]string{"x": "y"}},
		{name: "full", ann: map[string]string{AnnotationDHCPAddress: "10.77.0.150", AnnotationDHCPMAC: "02:11:22:33:44:55",
			AnnotationDHCPExpiry: exp.Format(time.RFC3339)}, ok: true, addr: "10.77.0.150"},
		{name: "address only", ann: map[string]string{AnnotationDHCPAddress: " 10.1.2.3 "}, ok: true, addr: "10.1.2.3"},
		{name: "garbage", ann: map[string]string{AnnotationDHCPAddress: "ten"}, ok: true, wantErr: true},
		{name: "ipv6", ann: map[string]string{AnnotationDHCPAddress: "fd00::1"}, ok: true, wantErr: true},
		{name: "mapped ipv6", ann: map[string]string{AnnotationDHCPAddress: "::ffff:10.0.0.1"}, ok: true, wantErr: true},
		{name: "unspecified", ann: map[string]string{AnnotationDHCPAddress: "0.0.0.0"}, ok: true, wantErr: true},
		{name: "loopback", ann: map[string]string{AnnotationDHCPAddress: "127.0.0.1"}, ok: true, wantErr: true},
		{name: "multicast", ann: map[string]string{AnnotationDHCPAddress: "224.0.0.1"}, ok: true, wantErr: true},
		{name: "link-local", ann: map[string]string{AnnotationDHCPAddress: "169.254.1.1"}, ok: true, wantErr: true},
		{name: "broadcast", ann: map[string]string{AnnotationDHCPAddress: "255.255.255.255"}, ok: true, wantErr: true},
		{name: "bad mac", ann: map[string]string{AnnotationDHCPAddress: "10.0.0.1", AnnotationDHCPMAC: "zz"}, ok: true, wantErr: true},
		{name: "long mac", ann: map[string]string{AnnotationDHCPAddress: "10.0.0.1", AnnotationDHCPMAC: "00:00:00:00:fe:80:00:00"}, ok: true, wantErr: true},
		{name: "bad expiry", ann: map[string]string{AnnotationDHCPAddress: "10.0.0.1", AnnotationDHCPExpiry: "soon"}, ok: true, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec, ok, err := ParseDHCPRecord(tc.ann)
			if ok != tc.ok || (err != nil) != tc.wantErr {
				t.Fatalf("ParseDHCPRecord(%v) = %v, %v, %v; want ok=%v err=%v", tc.ann, rec, ok, err, tc.ok, tc.wantErr)
			}
			if err != nil && !errors.Is(err, ErrBadDHCPRecord) {
				t.Errorf("error %v is not ErrBadDHCPRecord", err)
			}
			if tc.addr != "" && rec.Addr != netip.MustParseAddr(tc.addr) {
				t.Errorf("address %v, want %s", rec.Addr, tc.addr)
			}
		})
	}
}

func TestDHCPRecordRoundTrip(t *testing.T) {
	in := DHCPRecord{Addr: netip.MustParseAddr("10.77.0.151"), MAC: net.HardwareAddr{2, 1, 2, 3, 4, 5},
		Expiry: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	out, ok, err := ParseDHCPRecord(in.Annotations())
	if !ok || err != nil || out.Addr != in.Addr || out.MAC.String() != in.MAC.String() || !out.Expiry.Equal(in.Expiry) {
		t.Fatalf("round trip: %+v, %v, %v; want %+v", out, ok, err, in)
	}
}

func FuzzParseDHCPRecord(f *testing.F) {
	f.Add("10.77.0.150", "02:11:22:33:44:55", "2026-11-23T15:00:00Z")
	f.Add("::1", "", "")
	f.Add("0.0.0.0", "zz", "x")
	f.Fuzz(func(t *testing.T, addr, mac, exp string) {
		ann := map[string]string{AnnotationDHCPAddress: addr, AnnotationDHCPMAC: mac, AnnotationDHCPExpiry: exp}
		rec, ok, err := ParseDHCPRecord(ann)
		if !ok {
			t.Fatal("a present address must report ok")
		}
		if err != nil {
			return
		}
		if !rec.Addr.Is4() || rec.Addr.IsUnspecified() || rec.Addr.IsLoopback() || rec.Addr.IsMulticast() || rec.Addr.IsLinkLocalUnicast() {
			t.Fatalf("accepted unusable address %v from %q", rec.Addr, addr)
		}
		if rec.MAC != nil && len(rec.MAC) != 6 {
			t.Fatalf("accepted MAC %v", rec.MAC)
		}
		again, _, err := ParseDHCPRecord(rec.Annotations())
		if err != nil || again.Addr != rec.Addr {
			t.Fatalf("re-parse of %v: %v, %v", rec.Annotations(), again, err)
		}
	})
}

func TestUsesDHCP(t *testing.T) {
	pools, errs := ipam.ParseConfig(map[string]string{"cidr-home": "0.0.0.0/32", "cidr-global": "10.1.0.0/24",
		"cidr-old": "0.0.0.0/32,10.2.0.0/24"})
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	svc := func(ns string, mut ...func(*v1.Service)) *v1.Service {
		s := &v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "s"}, Spec: v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer}}
		for _, m := range mut {
			m(s)
		}
		return s
	}
	ann := func(v string) func(*v1.Service) {
		return func(s *v1.Service) { s.Annotations = map[string]string{AnnotationLoadBalancerIPs: v} }
	}
	status := func(ip string) func(*v1.Service) {
		return func(s *v1.Service) { s.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: ip}} }
	}
	v6 := func(s *v1.Service) { s.Spec.IPFamilies = []v1.IPFamily{v1.IPv6Protocol} }
	for _, tc := range []struct {
		name  string
		svc   *v1.Service
		pools *ipam.Config
		want  bool
	}{
		{"0.0.0.0 annotation", svc("default", ann("0.0.0.0")), nil, true},
		{"0.0.0.0 spec", svc("default", func(s *v1.Service) { s.Spec.LoadBalancerIP = "0.0.0.0" }), nil, true},
		{"static request", svc("home", ann("10.9.9.9")), pools, false},
		{"bad request", svc("home", ann("x")), pools, false},
		{"marker pool", svc("home"), pools, true},
		{"marker pool, leased address in status", svc("home", status("10.77.0.150")), pools, true},
		{"marker pool, IPv6 only", svc("home", v6), pools, false},
		{"global pool", svc("default"), pools, false},
		{"no pools", svc("home"), nil, false},
		{"pool address in status stays", svc("old", status("10.2.0.1")), pools, false},
	} {
		if got := UsesDHCP(tc.svc, tc.pools); got != tc.want {
			t.Errorf("%s: UsesDHCP = %v, want %v", tc.name, got, tc.want)
		}
	}
}
