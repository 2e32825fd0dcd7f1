package ccm

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/cloud-provider/api"

	"github.com/vip-lb/vip/pkg/lbsvc"
)

// newTestLB returns a LoadBalancer wired to fake informers holding objs,
// with pools data, synced and ready.
func newTestLB(t *testing.T, opts Options, pools map[string]string, objs ...runtime.Object) (*LoadBalancer, *record.FakeRecorder) {
	t.Helper()
	if pools != nil {
		objs = append(objs, &v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: opts.ConfigMapName, Namespace: opts.ConfigMapNamespace}, Data: pools})
	}
	client := fake.NewClientset(objs...)
	lb := newLoadBalancer(opts, nil)
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	rec := record.NewFakeRecorder(100)
	lb.start(client, rec, stop)
	f := informers.NewSharedInformerFactory(client, 0)
	lb.setInformers(f)
	f.Start(stop)
	deadline := time.Now().Add(time.Minute)
	for !lb.hasSynced() {
		if time.Now().After(deadline) {
			t.Fatal("informers did not sync")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return lb, rec
}

func lbSvc(ns, name string, mut ...func(*v1.Service)) *v1.Service {
	s := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID("uid-" + name)},
		Spec: v1.ServiceSpec{
			Type:       v1.ServiceTypeLoadBalancer,
			IPFamilies: []v1.IPFamily{v1.IPv4Protocol},
			Ports:      []v1.ServicePort{{Protocol: v1.ProtocolTCP, Port: 80}},
		},
	}
	for _, m := range mut {
		m(s)
	}
	return s
}

func withStatus(ips ...string) func(*v1.Service) {
	return func(s *v1.Service) {
		for _, ip := range ips {
			s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, v1.LoadBalancerIngress{IP: ip})
		}
	}
}

func ensureIPs(t *testing.T, lb *LoadBalancer, svc *v1.Service) ([]string, error) {
	t.Helper()
	st, err := lb.EnsureLoadBalancer(context.Background(), "c", svc, nil)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, in := range st.Ingress {
		out = append(out, in.IP)
	}
	return out, nil
}

// waitEvents waits up to timeout for n events, then returns what came.
func waitEvents(rec *record.FakeRecorder, n int, timeout time.Duration) []string {
	var out []string
	deadline := time.After(timeout)
	for len(out) < n {
		select {
		case e := <-rec.Events:
			if !strings.HasPrefix(e, "Warning "+ReasonStaticUnrestricted+" ") {
				out = append(out, e)
			}
		case <-deadline:
			return out
		}
	}
	return append(out, drain(rec)...)
}

// drain returns the Events recorded so far, leaving out the one-time
// Warning about a legacy pools ConfigMap (TestLegacyConfigMapWarnsOnce
// checks it).
func drain(rec *record.FakeRecorder) []string {
	var out []string
	for {
		select {
		case e := <-rec.Events:
			if !strings.HasPrefix(e, "Warning "+ReasonStaticUnrestricted+" ") {
				out = append(out, e)
			}
		default:
			return out
		}
	}
}

func TestEnsureRestoresFromStatus(t *testing.T) {
	held := lbSvc("default", "held", withStatus("10.0.0.0"))
	foreign := lbSvc("default", "foreign", withStatus("10.0.0.1"), func(s *v1.Service) {
		c := "example.com/other"
		s.Spec.LoadBalancerClass = &c
	})
	lb, rec := newTestLB(t, DefaultOptions(), map[string]string{"cidr-global": "10.0.0.0/29"}, held, foreign)

	ips, err := ensureIPs(t, lb, lbSvc("default", "new"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ips) != 1 || ips[0] != "10.0.0.2" {
		t.Fatalf("new Service got %v, want 10.0.0.2 (.0 held by a served Service, .1 by a foreign one)", ips)
	}
	ips, err = ensureIPs(t, lb, held)
	if err != nil || len(ips) != 1 || ips[0] != "10.0.0.0" {
		t.Fatalf("restored Service got %v, %v; want its own 10.0.0.0", ips, err)
	}
	evs := drain(rec)
	if len(evs) != 1 || !strings.Contains(evs[0], ReasonAllocated) || !strings.Contains(evs[0], "10.0.0.2") {
		t.Errorf("want one AddressAllocated event for the new Service, got %q", evs)
	}
	// A foreign Service for another class is left alone.
	if _, err := lb.EnsureLoadBalancer(context.Background(), "c", foreign, nil); !errors.Is(err, cloudprovider.ImplementedElsewhere) {
		t.Errorf("foreign Service: err %v, want ImplementedElsewhere", err)
	}
}

func TestEnsureFailuresAreRetriedWithEvents(t *testing.T) {
	opts := DefaultOptions()
	opts.ControlPlaneVIPs = []netip.Addr{netip.MustParseAddr("10.0.0.1")}
	node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: v1.NodeStatus{Addresses: []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "10.0.0.0"}}}}
	lb, rec := newTestLB(t, opts, map[string]string{"range-global": "10.0.0.0-10.0.0.3", "skip-dot0-dot255": "false", "cidr-bad": "nope"}, node)
	// The ConfigMap handler may run just after the informers report synced.
	if evs := waitEvents(rec, 1, time.Minute); len(evs) != 1 || !strings.HasPrefix(evs[0], "Warning "+ReasonPoolConfigInvalid) || !strings.Contains(evs[0], "nope") {
		t.Errorf("bad pool entry: events %q", evs)
	}

	for _, tc := range []struct {
		name, ann, reason, why string
	}{
		{"node", "10.0.0.0", ReasonForbidden, "address of a Node"},
		{"cp", "10.0.0.1", ReasonForbidden, "control-plane"},
		{"loop", "127.0.0.1", ReasonForbidden, "loopback"},
		{"mcast", "239.1.1.1", ReasonForbidden, "multicast"},
		{"junk", "x.y", ReasonInvalidRequest, "x.y"},
	} {
		svc := lbSvc("default", tc.name, func(s *v1.Service) {
			s.Annotations = map[string]string{lbsvc.AnnotationLoadBalancerIPs: tc.ann}
		})
		_, err := lb.EnsureLoadBalancer(context.Background(), "c", svc, nil)
		var re *api.RetryError
		if !errors.As(err, &re) {
			t.Errorf("%s: err %v, want a RetryError", tc.name, err)
		}
		evs := drain(rec)
		if len(evs) != 1 || !strings.HasPrefix(evs[0], "Warning "+tc.reason) || !strings.Contains(evs[0], tc.why) {
			t.Errorf("%s: events %q, want one Warning %s saying %q", tc.name, evs, tc.reason, tc.why)
		}
	}
	// The pool skips the node and control-plane addresses: .2, .3, then exhausted.
	for _, want := range []string{"10.0.0.2", "10.0.0.3"} {
		ips, err := ensureIPs(t, lb, lbSvc("default", "p"+want))
		if err != nil || len(ips) != 1 || ips[0] != want {
			t.Fatalf("got %v, %v; want %s", ips, err, want)
		}
	}
	drain(rec)
	_, err := lb.EnsureLoadBalancer(context.Background(), "c", lbSvc("default", "last"), nil)
	var re *api.RetryError
	if !errors.As(err, &re) || re.RetryAfter() != opts.RetryAfter {
		t.Fatalf("exhausted: err %v, want a RetryError after %v", err, opts.RetryAfter)
	}
	evs := drain(rec)
	if len(evs) != 1 || !strings.HasPrefix(evs[0], "Warning "+ReasonNoAddress) {
		t.Errorf("exhausted: events %q", evs)
	}
}

func TestMissingConfigMap(t *testing.T) {
	lb, rec := newTestLB(t, DefaultOptions(), nil)
	_, err := lb.EnsureLoadBalancer(context.Background(), "c", lbSvc("default", "a"), nil)
	if err == nil {
		t.Fatal("want an error without pools")
	}
	evs := drain(rec)
	if len(evs) != 1 || !strings.HasPrefix(evs[0], "Warning "+ReasonPoolConfigMissing) {
		t.Errorf("events %q", evs)
	}
}

func TestDHCPMarkerStaysPending(t *testing.T) {
	lb, rec := newTestLB(t, DefaultOptions(), map[string]string{"cidr-global": "0.0.0.0/32"})
	st, err := lb.EnsureLoadBalancer(context.Background(), "c", lbSvc("default", "a"), nil)
	if err == nil || st != nil {
		t.Fatalf("DHCP pool: status %v, err %v; want pending", st, err)
	}
	if evs := drain(rec); len(evs) != 1 || !strings.Contains(evs[0], ReasonWaitingForDHCP) {
		t.Errorf("events %q", evs)
	}
}

func TestReleaseOnDeleteAndForeignTracking(t *testing.T) {
	lb, _ := newTestLB(t, DefaultOptions(), map[string]string{"cidr-global": "10.0.0.0/31", "skip-dot0-dot255": "false"})
	a := lbSvc("default", "a")
	if ips, err := ensureIPs(t, lb, a); err != nil || ips[0] != "10.0.0.0" {
		t.Fatalf("%v %v", ips, err)
	}
	if err := lb.EnsureLoadBalancerDeleted(context.Background(), "c", a); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := lb.GetLoadBalancer(context.Background(), "c", a); ok {
		t.Fatal("released Service still has a load balancer")
	}
	// A foreign Service takes 10.0.0.0 in its status: vip must not hand it out.
	ignored := lbSvc("default", "ign", withStatus("10.0.0.0"), func(s *v1.Service) {
		s.Annotations = map[string]string{lbsvc.AnnotationIgnore: "true"}
	})
	lb.onServiceChanged(ignored)
	if ips, err := ensureIPs(t, lb, lbSvc("default", "b")); err != nil || ips[0] != "10.0.0.1" {
		t.Fatalf("got %v %v, want 10.0.0.1", ips, err)
	}
	// Its status clears: the address is free again.
	lb.onServiceChanged(lbSvc("default", "ign", func(s *v1.Service) {
		s.Annotations = map[string]string{lbsvc.AnnotationIgnore: "true"}
	}))
	if ips, err := ensureIPs(t, lb, lbSvc("default", "c")); err != nil || ips[0] != "10.0.0.0" {
		t.Fatalf("got %v %v, want 10.0.0.0", ips, err)
	}
}

func TestPoolStateKeepsLastGood(t *testing.T) {
	p := newPoolState()
	eff, errs := p.update(map[string]string{"cidr-global": "10.0.0.0/30", "range-x": "10.1.0.1-10.1.0.2"})
	if len(errs) != 0 || eff["cidr-global"] != "10.0.0.0/30" {
		t.Fatalf("%v %v", eff, errs)
	}
	eff, errs = p.update(map[string]string{"cidr-global": "10.0.0.0/33", "range-x": "10.1.0.1-10.1.0.3"})
	if len(errs) != 1 {
		t.Fatalf("want one error, got %v", errs)
	}
	if eff["cidr-global"] != "10.0.0.0/30" {
		t.Errorf("broken key: effective %q, want the last good value", eff["cidr-global"])
	}
	if eff["range-x"] != "10.1.0.1-10.1.0.3" {
		t.Errorf("good key: effective %q", eff["range-x"])
	}
	if s := p.errorsFor("anything"); !strings.Contains(s, "10.0.0.0/33") {
		t.Errorf("errorsFor: %q", s)
	}
	// A broken key without a good past keeps its good entries.
	eff, _ = p.update(map[string]string{"cidr-y": "10.2.0.0/31,bad"})
	if eff["cidr-y"] != "10.2.0.0/31,bad" {
		t.Errorf("new partly bad key: %q", eff["cidr-y"])
	}
	if _, ok := p.lastGood["cidr-global"]; ok {
		t.Error("removed key kept its last good value")
	}
}

func TestInstanceMetadata(t *testing.T) {
	node := &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "n1", Annotations: map[string]string{annotationProvidedNodeIP: "10.0.0.5,fd00::5"}},
		Status:     v1.NodeStatus{Addresses: []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "10.0.0.5"}}},
	}
	md, err := instances{}.InstanceMetadata(context.Background(), node)
	if err != nil {
		t.Fatal(err)
	}
	if md.ProviderID != "vip://n1" {
		t.Errorf("providerID %q", md.ProviderID)
	}
	want := []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "10.0.0.5"}, {Type: v1.NodeInternalIP, Address: "fd00::5"}, {Type: v1.NodeHostName, Address: "n1"}}
	if len(md.NodeAddresses) != len(want) {
		t.Fatalf("addresses %v, want %v", md.NodeAddresses, want)
	}
	for i := range want {
		if md.NodeAddresses[i] != want[i] {
			t.Errorf("address %d: %v, want %v", i, md.NodeAddresses[i], want[i])
		}
	}
	node.Spec.ProviderID = "other://x"
	if md, _ := (instances{}).InstanceMetadata(context.Background(), node); md.ProviderID != "other://x" {
		t.Errorf("kept providerID: %q", md.ProviderID)
	}
}

func TestNodeAddressesForbidUntilRemoved(t *testing.T) {
	node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: v1.NodeStatus{Addresses: []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "10.0.0.0"}}}}
	lb, _ := newTestLB(t, DefaultOptions(), map[string]string{"cidr-global": "10.0.0.0/31", "skip-dot0-dot255": "false"}, node)
	if ips, err := ensureIPs(t, lb, lbSvc("default", "a")); err != nil || ips[0] != "10.0.0.1" {
		t.Fatalf("got %v %v, want 10.0.0.1 (10.0.0.0 is the node's)", ips, err)
	}
	// A status update that keeps the address changes nothing.
	same := node.DeepCopy()
	same.Status.Addresses = append(same.Status.Addresses, v1.NodeAddress{Type: v1.NodeHostName, Address: "n1"})
	lb.nodeAddrs(node, same)
	if _, err := ensureIPs(t, lb, lbSvc("default", "b")); err == nil {
		t.Fatal("the node's address was handed out")
	}
	// The node changes its address: 10.0.0.0 is free.
	moved := same.DeepCopy()
	moved.Status.Addresses = []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "10.9.9.9"}}
	lb.nodeAddrs(same, moved)
	if ips, err := ensureIPs(t, lb, lbSvc("default", "c")); err != nil || ips[0] != "10.0.0.0" {
		t.Fatalf("got %v %v, want the freed 10.0.0.0", ips, err)
	}
}

// TestLegacyConfigMapWarnsOnce: a pools ConfigMap without
// allow-static-outside-pools gets one Warning, however often it changes; a
// ConfigMap with the key gets none.
func TestLegacyConfigMapWarnsOnce(t *testing.T) {
	for _, tc := range []struct {
		name  string
		pools map[string]string
		want  int
	}{
		{"legacy", map[string]string{"cidr-global": "10.0.0.0/30"}, 1},
		{"new install", map[string]string{"cidr-global": "10.0.0.0/30", "allow-static-outside-pools": "false"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lb, rec := newTestLB(t, DefaultOptions(), tc.pools)
			for i := range 3 {
				data := maps.Clone(tc.pools)
				data["cidr-x"] = fmt.Sprintf("10.1.%d.0/30", i)
				lb.onConfigMap(&v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "kubevip", Namespace: "kube-system"}, Data: data})
			}
			n := 0
			for {
				select {
				case e := <-rec.Events:
					if strings.HasPrefix(e, "Warning "+ReasonStaticUnrestricted+" ") {
						n++
					}
					continue
				default:
				}
				break
			}
			if n != tc.want {
				t.Errorf("%d %s Warnings, want %d", n, ReasonStaticUnrestricted, tc.want)
			}
		})
	}
}
