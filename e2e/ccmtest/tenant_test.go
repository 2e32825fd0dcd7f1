package ccmtest

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"github.com/vip-lb/vip/pkg/lbsvc"
)

// Addresses of TestHostileTenant. None is ever sent a packet: they are only
// values in Service requests that must be refused.
const (
	tenantNode     = "10.60.1.4"  // Node InternalIP, also on the heartbeat
	tenantNodeIf   = "10.60.2.9"  // another interface of the node (heartbeat only)
	tenantRouter   = "10.60.2.1"  // the node's default gateway (heartbeat)
	tenantCP       = "10.60.2.2"  // control-plane VIP, learned from the lock Lease
	tenantPodAddr  = "10.244.1.7" // inside node-1's pod CIDR
	tenantOtherLAN = "192.168.77.20"
	tenantPublic   = "8.8.8.8"
)

// tenantClient returns a client acting as ServiceAccount ns/tenant holding,
// in ns only, the rules of the stock "edit" ClusterRole: what a namespace
// user has.
func tenantClient(t *testing.T, h *Harness, ns string) kubernetes.Interface {
	t.Helper()
	ctx := tctx(t)
	tok, err := h.Env.ServiceAccountToken(ctx, ns, "tenant")
	if err != nil {
		t.Fatal(err)
	}
	// "edit" is aggregated by kube-controller-manager, which this API
	// server runs without: bind exactly the rules it aggregates.
	for _, role := range []string{"system:aggregate-to-edit", "system:aggregate-to-view"} {
		rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "tenant-" + strings.TrimPrefix(role, "system:"), Namespace: ns},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "tenant", Namespace: ns}}}
		if _, err := h.Admin.RbacV1().RoleBindings(ns).Create(ctx, rb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	cs, err := kubernetes.NewForConfig(h.Env.TokenConfig(tok))
	if err != nil {
		t.Fatal(err)
	}
	// The API server's authorizer sees a new binding after a moment.
	probe := LBService(ns, "rbac-probe")
	deadline := time.Now().Add(time.Minute)
	for {
		_, err := cs.CoreV1().Services(ns).Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err == nil {
			return cs
		}
		if time.Now().After(deadline) {
			t.Fatalf("the tenant still may not create Services: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// createAs creates a Service with cs, in a namespace that exists.
func createAs(t *testing.T, cs kubernetes.Interface, svc *v1.Service) {
	t.Helper()
	if _, err := cs.CoreV1().Services(svc.Namespace).Create(tctx(t), svc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create service %s/%s: %v", svc.Namespace, svc.Name, err)
	}
}

func putLease(t *testing.T, cs kubernetes.Interface, ns, name string, labels, ann map[string]string) error {
	t.Helper()
	now := metav1.NewMicroTime(time.Now())
	l := &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels, Annotations: ann},
		Spec: coordv1.LeaseSpec{RenewTime: &now}}
	_, err := cs.CoordinationV1().Leases(ns).Create(tctx(t), l, metav1.CreateOptions{})
	return err
}

// noForeignName fails when an Event on a Service of ns names a Service of
// another namespace.
func noForeignName(t *testing.T, ev *v1.Event, foreign ...string) {
	t.Helper()
	for _, f := range foreign {
		if strings.Contains(ev.Message, f+"/") {
			t.Errorf("Event on %s names a Service of namespace %s: %q", ev.InvolvedObject.Name, f, ev.Message)
		}
	}
}

// TestHostileTenant plays a namespace user with the stock edit rights
// against vip-ccm running with the shipped RBAC: each attack is refused
// with a Warning Event and never reaches status, and a legitimate Service
// keeps its address throughout.
func TestHostileTenant(t *testing.T) {
	h := New(t)
	cs := h.Admin
	ctx := tctx(t)
	pools := map[string]string{
		"cidr-global": "10.60.0.0/28",
		"cidr-team-b": "10.62.0.0/28",
		"cidr-x":      "10.63.0.0/28",
	}
	h.SetPools(ctx, pools) // a kube-vip ConfigMap: no allow-static-outside-pools
	createNode(t, cs, "node-1", false, v1.NodeAddress{Type: v1.NodeInternalIP, Address: tenantNode})
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := cs.CoreV1().Nodes().Get(ctx, "node-1", metav1.GetOptions{})
		if err != nil {
			return err
		}
		n.Spec.PodCIDR, n.Spec.PodCIDRs = "10.244.1.0/24", []string{"10.244.1.0/24"}
		_, err = cs.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// What the agents publish in kube-system (written here by hand).
	if err := putLease(t, cs, "kube-system", "vip-node-node-1", nil, map[string]string{
		lbsvc.AnnotationNodeAddresses: tenantNode + "," + tenantNodeIf, lbsvc.AnnotationNodeGateways: tenantRouter}); err != nil {
		t.Fatal(err)
	}
	if err := putLease(t, cs, "kube-system", "plndr-cp-lock", nil, map[string]string{lbsvc.AnnotationControlPlaneAddress: tenantCP}); err != nil {
		t.Fatal(err)
	}
	// No --control-plane-address: the VIP is learned from the Lease.
	ccm := h.StartCCM("vip-ccm", "--leader-elect=false", "--retry-after=2s", "--v=2")

	t.Run("LegacyConfigMapWarnsOnce", func(t *testing.T) {
		waitEvent(t, cs, PoolsNamespace, "ConfigMap", PoolsName, v1.EventTypeWarning, "StaticAddressesUnrestricted")
		// Another edit, still without the key; once vip-ccm has read it (a
		// Service of namespace y gets an address from the new pool) there
		// is still one Event, counted once.
		pools["cidr-y"] = "10.64.0.0/28"
		h.SetPools(ctx, pools)
		create(t, cs, LBService("y", "probe"))
		if ip := waitIP(t, cs, "y", "probe"); !strings.HasPrefix(ip, "10.64.0.") {
			t.Fatalf("y/probe got %s", ip)
		}
		evs, err := Events(ctx, cs, PoolsNamespace, "ConfigMap", PoolsName, "StaticAddressesUnrestricted")
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 1 || evs[0].Count > 1 {
			t.Errorf("StaticAddressesUnrestricted Events: %d (count %d), want one", len(evs), evs[0].Count)
		}
		if !ccm.LogContains("no allow-static-outside-pools key") {
			t.Error("vip-ccm did not log the legacy ConfigMap")
		}
	})

	// From here on: a new install's ConfigMap.
	pools["allow-static-outside-pools"] = "false"
	pools["allow-share-global"] = "true"
	h.SetPools(ctx, pools)
	tenant := tenantClient(t, h, "team-a")
	createAs(t, tenant, LBService("team-a", "legit"))
	legit := waitIP(t, cs, "team-a", "legit")
	if !netip.MustParsePrefix("10.60.0.0/28").Contains(netip.MustParseAddr(legit)) {
		t.Fatalf("team-a/legit got %s, want one from cidr-global", legit)
	}
	// Another namespace's Services: one in its own pool, one global.
	create(t, cs, LBService("team-b", "db", WithPorts(5432)))
	teamB := waitIP(t, cs, "team-b", "db")
	create(t, cs, LBService("team-c", "web", WithPorts(80)))
	teamC := waitIP(t, cs, "team-c", "web")
	legitSvc, err := cs.CoreV1().Services("team-a").Get(ctx, "legit", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	attacks := []struct{ name, addr, reason string }{
		{"router", tenantRouter, "AddressForbidden"},
		{"node-address", tenantNode, "AddressForbidden"},
		{"node-other-interface", tenantNodeIf, "AddressForbidden"},
		{"control-plane-vip", tenantCP, "AddressForbidden"},
		{"pod-cidr", tenantPodAddr, "AddressForbidden"},
		{"cluster-ip", legitSvc.Spec.ClusterIP, "AddressForbidden"},
		{"other-namespace-pool", teamB, "AddressForbidden"},
		{"other-host", tenantOtherLAN, "AddressOutsidePools"},
		{"public", tenantPublic, "AddressOutsidePools"},
		{"dhcp-without-consent", "0.0.0.0", "AddressForbidden"},
		{"share-without-consent", teamC, "AddressConflict"},
	}
	// An unallocated address of the Service CIDR, when the API server has
	// ServiceCIDR objects.
	if scs, err := cs.NetworkingV1().ServiceCIDRs().List(ctx, metav1.ListOptions{}); err == nil && len(scs.Items) > 0 {
		p := netip.MustParsePrefix(scs.Items[0].Spec.CIDRs[0])
		a := p.Addr()
		for range 200 {
			a = a.Next()
		}
		attacks = append(attacks, struct{ name, addr, reason string }{"service-cidr", a.String(), "AddressForbidden"})
	} else {
		t.Logf("no ServiceCIDR objects (%v): only ClusterIPs are checked", err)
	}
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			createAs(t, tenant, LBService("team-a", a.name, WithPorts(8080), WithAnnotation(annIPs, a.addr)))
			ev := waitEvent(t, cs, "team-a", "Service", a.name, v1.EventTypeWarning, a.reason)
			noForeignName(t, ev, "team-b", "team-c")
			assertPending(t, cs, "team-a", a.name, 0)
		})
	}
	// spec.loadBalancerIP is held to the same rules.
	createAs(t, tenant, LBService("team-a", "spec-router", func(s *v1.Service) { s.Spec.LoadBalancerIP = tenantRouter }))
	waitEvent(t, cs, "team-a", "Service", "spec-router", v1.EventTypeWarning, "AddressForbidden")
	assertPending(t, cs, "team-a", "spec-router", 0)

	t.Run("ForgedDHCPLeaseIgnored", func(t *testing.T) {
		// The admin lets team-a use DHCP; the tenant forges the record, in
		// the old place and under the new name, in its own namespace.
		pools["allow-dhcp-team-a"] = "true"
		h.SetPools(ctx, pools)
		name := lbsvc.DHCPLeaseName("team-a", "dhcp")
		for _, ln := range []string{"kubevip-dhcp", name} {
			err := putLease(t, tenant, "team-a", ln,
				map[string]string{lbsvc.LabelDHCP: "true", "vip.io/service": "dhcp"},
				map[string]string{lbsvc.AnnotationDHCPAddress: tenantRouter, "vip.io/service": "team-a/dhcp"})
			if apierrors.IsForbidden(err) {
				// Not granted by this API server's edit role: the Lease
				// is put there anyway, as a user with more rights in the
				// namespace could.
				t.Logf("edit may not create Leases here (%v); writing %s/%s as admin", err, "team-a", ln)
				err = putLease(t, cs, "team-a", ln,
					map[string]string{lbsvc.LabelDHCP: "true", "vip.io/service": "dhcp"},
					map[string]string{lbsvc.AnnotationDHCPAddress: tenantRouter, "vip.io/service": "team-a/dhcp"})
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		createAs(t, tenant, LBService("team-a", "dhcp", WithAnnotation(annIPs, "0.0.0.0")))
		waitEvent(t, cs, "team-a", "Service", "dhcp", v1.EventTypeNormal, "WaitingForDHCP")
		assertPending(t, cs, "team-a", "dhcp", 0)
		// The record an agent writes in kube-system is the one used.
		if err := putLease(t, cs, "kube-system", name, nil, map[string]string{
			lbsvc.AnnotationDHCPAddress: "10.65.0.20", "vip.io/service": "team-a/dhcp"}); err != nil {
			t.Fatal(err)
		}
		wantIP(t, cs, "team-a", "dhcp", "10.65.0.20")
	})

	t.Run("ShareWithConsent", func(t *testing.T) {
		// Both sides agree: the same key, each naming the other namespace.
		if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			s, err := cs.CoreV1().Services("team-c").Get(ctx, "web", metav1.GetOptions{})
			if err != nil {
				return err
			}
			s.Annotations = map[string]string{lbsvc.AnnotationSharingKey: "shop", lbsvc.AnnotationSharingCrossNamespace: "team-a"}
			_, err = cs.CoreV1().Services("team-c").Update(ctx, s, metav1.UpdateOptions{})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		createAs(t, tenant, LBService("team-a", "shop", WithPorts(8443), WithAnnotation(annIPs, teamC),
			WithAnnotation(lbsvc.AnnotationSharingKey, "shop"), WithAnnotation(lbsvc.AnnotationSharingCrossNamespace, "team-c")))
		wantIP(t, cs, "team-a", "shop", teamC)
	})

	// Nothing legitimate moved; vip-ccm is up.
	wantIP(t, cs, "team-a", "legit", legit)
	wantIP(t, cs, "team-b", "db", teamB)
	wantIP(t, cs, "team-c", "web", teamC)
	for _, a := range attacks {
		svc, err := cs.CoreV1().Services("team-a").Get(ctx, a.name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if ips := IngressIPs(svc); slices.Contains(ips, a.addr) {
			t.Errorf("%s: refused address %s in status", a.name, a.addr)
		}
	}
	if exited, err := ccm.Exited(); exited {
		t.Fatalf("vip-ccm exited: %v", err)
	}
}

// TestWithoutCloudNodeController: vip-ccm runs without the cloud-node
// controller and without system:vip-ccm-cloud-node (no right to write
// Nodes), hands out addresses, and hits no RBAC denial (the harness fails
// the test on one).
func TestWithoutCloudNodeController(t *testing.T) {
	h := New(t)
	cs := h.Admin
	ctx := tctx(t)
	if err := cs.RbacV1().ClusterRoleBindings().Delete(ctx, "system:vip-ccm-cloud-node", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cs.RbacV1().ClusterRoles().Delete(ctx, "system:vip-ccm-cloud-node", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	h.SetPools(ctx, map[string]string{"cidr-global": "10.66.0.0/28", "allow-static-outside-pools": "false"})
	createNode(t, cs, "node-1", true, v1.NodeAddress{Type: v1.NodeInternalIP, Address: "10.66.1.4"})
	h.StartCCM("vip-ccm", "--leader-elect=false", "--controllers=*,-cloud-node-controller", "--retry-after=2s", "--v=2")
	create(t, cs, LBService("app", "web"))
	if ip := waitIP(t, cs, "app", "web"); ip != "10.66.0.1" {
		t.Errorf("app/web got %s, want 10.66.0.1", ip)
	}
	// The node was left alone: still tainted as uninitialised.
	n, err := cs.CoreV1().Nodes().Get(ctx, "node-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(n.Spec.Taints, func(t v1.Taint) bool { return t.Key == "node.cloudprovider.kubernetes.io/uninitialized" }) {
		t.Errorf("node-1 taints %v: something initialised it", n.Spec.Taints)
	}
}

// TestConflictQuarantine: an agent's conflict record (written here by hand
// in kube-system) takes the address out of the Service's status with a
// Warning AddressInUse naming the MAC; the Service gets another pool
// address and a request for the quarantined one is refused.
func TestConflictQuarantine(t *testing.T) {
	h := New(t)
	cs := h.Admin
	ctx := tctx(t)
	h.SetPools(ctx, map[string]string{"range-global": "10.67.0.10-10.67.0.12", "allow-static-outside-pools": "false"})
	h.StartCCM("vip-ccm", "--leader-elect=false", "--retry-after=2s", "--v=2")
	create(t, cs, LBService("app", "web"))
	if ip := waitIP(t, cs, "app", "web"); ip != "10.67.0.10" {
		t.Fatalf("app/web got %s", ip)
	}
	if err := putLease(t, cs, "kube-system", lbsvc.ConflictLeaseName(netip.MustParseAddr("10.67.0.10")), nil, map[string]string{
		lbsvc.AnnotationAddress: "10.67.0.10", lbsvc.AnnotationMAC: "02:de:ad:be:ef:01", lbsvc.AnnotationNode: "node-1"}); err != nil {
		t.Fatal(err)
	}
	ev := waitEvent(t, cs, "app", "Service", "web", v1.EventTypeWarning, "AddressInUse")
	if !strings.Contains(ev.Message, "02:de:ad:be:ef:01") {
		t.Errorf("AddressInUse does not name the MAC: %q", ev.Message)
	}
	wantIP(t, cs, "app", "web", "10.67.0.11")
	create(t, cs, LBService("app", "static", WithAnnotation(annIPs, "10.67.0.10")))
	waitEvent(t, cs, "app", "Service", "static", v1.EventTypeWarning, "AddressForbidden")
	assertPending(t, cs, "app", "static", 0)
}
