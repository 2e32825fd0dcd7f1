package ccm

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cloud-provider/api"

	"github.com/vip-lb/vip/pkg/lbsvc"
)

// TestStatusChangesGoThroughTheController: a conflict record, the end of
// its quarantine and a new DHCP record change no Service, yet change
// status. Each only queues the Services it concerns for the service
// controller (whose queue the test works by hand here, so nothing else
// could write), and the controller's sync writes the status: a pool
// Service gets another address, a static one is cleared and waits with
// AddressForbidden, both with a Warning AddressInUse naming the MAC; the
// quarantine's end gives the static one its address back; the new lease
// replaces the old one.
func TestStatusChangesGoThroughTheController(t *testing.T) {
	static := func(a string) func(*v1.Service) {
		return func(s *v1.Service) { s.Annotations = map[string]string{lbsvc.AnnotationLoadBalancerIPs: a} }
	}
	s := newIdleSCTest(t, lbsvc.ClassRule{}, false, "10.0.0.8/30",
		lbSvc("default", "web", withStatus("10.0.0.8")),
		lbSvc("default", "static", static("10.0.0.10"), withStatus("10.0.0.10")),
		dhcpSvc("default", "d", withStatus("10.77.0.150")))
	lease := dhcpLease("default", "d", map[string]string{lbsvc.AnnotationDHCPAddress: "10.77.0.150"})
	if _, err := s.client.CoordinationV1().Leases("kube-system").Create(s.ctx, lease, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	s.waitFor("informers synced", func() bool { return s.lb.hasSynced() && s.sc.synced() })
	// The Services' own Add events (and the DHCP record's), in any order.
	for s.sc.queue.Len() > 0 {
		key, _ := s.sc.queue.Get()
		if err := s.sc.sync(s.ctx, key); err != nil {
			t.Errorf("first sync of %s: %v", key, err)
		}
		s.sc.queue.Done(key)
	}
	for n, want := range map[string]string{"web": "10.0.0.8", "static": "10.0.0.10", "d": "10.77.0.150"} {
		if got := s.ips(n); !slices.Equal(got, []string{want}) {
			t.Fatalf("%s has status %v, want %s", n, got, want)
		}
	}
	drain(s.lbEvents)

	mac := "02:aa:bb:cc:dd:ee"
	for _, a := range []string{"10.0.0.8", "10.0.0.10"} {
		c := agentLease(lbsvc.ConflictLeasePrefix+strings.ReplaceAll(a, ".", "-"), map[string]string{lbsvc.AnnotationAddress: a, lbsvc.AnnotationMAC: mac})
		if _, err := s.client.CoordinationV1().Leases("kube-system").Create(s.ctx, c, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		svc := map[string]string{"10.0.0.8": "web", "10.0.0.10": "static"}[a]
		s.waitFor(svc+" queued", func() bool { return s.sc.queue.Len() > 0 })
		if got := s.ips(svc); !slices.Equal(got, []string{a}) {
			t.Errorf("%s's status changed to %v before its sync", svc, got)
		}
		err := s.next("default/" + svc)
		evs := drain(s.lbEvents)
		if len(evs) == 0 || !strings.HasPrefix(evs[0], "Warning "+ReasonAddressInUse) || !strings.Contains(evs[0], mac) {
			t.Errorf("%s: Events %q, want AddressInUse naming %s first", svc, evs, mac)
		}
		switch svc {
		case "web":
			if err != nil || !slices.Equal(s.ips("web"), []string{"10.0.0.9"}) {
				t.Errorf("web: status %v (%v), want the next pool address 10.0.0.9", s.ips("web"), err)
			}
		case "static":
			var re *api.RetryError
			if !errors.As(err, &re) || len(s.ips("static")) != 0 {
				t.Errorf("static: status %v (%v), want cleared and a retry", s.ips("static"), err)
			}
			if len(evs) != 2 || !strings.HasPrefix(evs[1], "Warning "+ReasonForbidden) {
				t.Errorf("static: Events %q, want AddressInUse then AddressForbidden", evs)
			}
		}
	}

	// The quarantine ends (once the informer shows the cleared status, as
	// it does long before in practice): the static Service is queued and
	// gets its address back.
	s.waitFor("the cleared status in the cache", func() bool {
		svc, err := s.sc.lister.Services("default").Get("static")
		return err == nil && len(svc.Status.LoadBalancer.Ingress) == 0
	})
	s.lb.mu.Lock()
	s.lb.now = func() time.Time { return time.Now().Add(DefaultOptions().ConflictQuarantine + time.Minute) }
	s.lb.mu.Unlock()
	if err := s.lb.expireConflict("10.0.0.10"); err != nil {
		t.Fatal(err)
	}
	if err := s.next("default/static"); err != nil || !slices.Equal(s.ips("static"), []string{"10.0.0.10"}) {
		t.Errorf("after the quarantine: static has %v (%v), want 10.0.0.10", s.ips("static"), err)
	}

	// A new lease recorded by the owning agent.
	lease.Annotations[lbsvc.AnnotationDHCPAddress] = "10.77.0.170"
	if _, err := s.client.CoordinationV1().Leases("kube-system").Update(s.ctx, lease, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	s.waitFor("d queued", func() bool { return s.sc.queue.Len() > 0 })
	if got := s.ips("d"); !slices.Equal(got, []string{"10.77.0.150"}) {
		t.Errorf("d's status changed to %v before its sync", got)
	}
	if err := s.next("default/d"); err != nil || !slices.Equal(s.ips("d"), []string{"10.77.0.170"}) {
		t.Errorf("new lease: d has %v (%v), want 10.77.0.170", s.ips("d"), err)
	}
}

// TestStatusWriteSkipsUnchanged: a sync that computes the status a Service
// already has writes nothing.
func TestStatusWriteSkipsUnchanged(t *testing.T) {
	s := newSCTest(t, lbsvc.ClassRule{}, false, "10.0.0.8/30", lbSvc("default", "web"))
	s.waitFor("web served", func() bool { return s.served("web") })
	rv := s.get("web").ResourceVersion
	if err := s.sc.sync(s.ctx, "default/web"); err != nil {
		t.Fatal(err)
	}
	if got := s.get("web").ResourceVersion; got != rv {
		t.Errorf("an unchanged status was written: resourceVersion %s, was %s", got, rv)
	}
}
