//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/vip-lb/vip/e2e/lab"
	"github.com/vip-lb/vip/pkg/agent"
	"github.com/vip-lb/vip/pkg/agent/upnpforward"
	"github.com/vip-lb/vip/pkg/lbsvc"
)

// hostileNS is the tenant's namespace; victimNS has a pool of its own.
const (
	hostileNS = "team-a"
	victimNS  = "team-b"
)

// hostileAttack is one thing a tenant with the stock edit rights tries.
type hostileAttack struct {
	name string
	// addr is the address that must never reach the Service's status (and
	// never be announced); invalid when the attack is not about an address.
	addr netip.Addr
	// opts build the tenant's Service.
	opts []lab.ServiceOption
	// prepare runs first (with the tenant's client), e.g. to forge a Lease.
	prepare func(ctx context.Context, t *testing.T, tenant kubernetes.Interface)
	// reason is the Warning reason expected ("" = any Warning).
	reason string
	// served: the Service still gets a legitimate address and answers
	// (the refusal concerns a setting, not the address).
	served bool
}

// TestHostileTenant: a ServiceAccount holding exactly the rules of the
// stock edit role (system:aggregate-to-edit + system:aggregate-to-view, as
// the API server bootstraps them) tries each attack of docs/security.md in
// the lab. Each is refused with a Warning Event on its Service; the refused
// address never reaches status; the client's neighbour entries for the
// router and the other host on the link never change (checked after every
// attempt); and a legitimate Service answers TCP throughout.
func TestHostileTenant(t *testing.T) {
	l := l2Lab(t, lab.Options{
		Namespaces: []string{hostileNS, victimNS},
		Pools: map[string]string{
			"allow-static-outside-pools": "false",
			"cidr-" + victimNS:           "10.X.8.0/29",
		},
		AgentArgs: []string{"--enableUPNP", "--upnp-discovery-window=1s"},
	})
	r, err := l.AddRouter()
	if err != nil {
		t.Fatal(err)
	}
	ctx := l2Ctx(t, 10*time.Minute)
	tenant := tenantClient(ctx, t, l)

	// The control-plane agent publishes the control-plane VIP on its lock
	// Lease (as vip-agent does); the lab has no control-plane VIP otherwise.
	cpVIP := l.IP4(250)
	cpLease := &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "plndr-cp-lock", Namespace: "kube-system",
		Annotations: map[string]string{"vip.io/control-plane-address": cpVIP.String()}}}
	if _, err := l.Admin.CoordinationV1().Leases("kube-system").Create(ctx, cpLease, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kubeSvc, err := l.Admin.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	clusterIP := netip.MustParseAddr(kubeSvc.Spec.ClusterIP)

	// Team B's legitimate Service on its own pool, and a legitimate
	// Service the client keeps talking to.
	victim := l2Create(t, l, victimNS, []string{"b-web"})[0]
	legit := l2Create(t, l, "default", []string{"legit"})[0]
	var served, failed atomic.Int64
	var lastErr atomic.Value
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if _, err := l.ClientGet(ctx, legit.VIP, lab.ServicePort, 2*time.Second); err != nil {
				failed.Add(1)
				lastErr.Store(err.Error())
			} else {
				served.Add(1)
			}
		}
	}()

	// The client knows the router and the API server host (another host on
	// the link); their MACs must never change.
	watched := map[string]netip.Addr{"router": r.LAN, "other host": l.IP4(1)}
	baseline := map[string]string{}
	for name, a := range watched {
		if err := l.ClientPing(ctx, a); err != nil {
			t.Fatalf("client ping %s %s: %v", name, a, err)
		}
		n, err := l.ClientNeigh(a)
		if err != nil || n.MAC == "" {
			t.Fatalf("client neighbour entry for %s %s: %+v, %v", name, a, n, err)
		}
		baseline[name] = n.MAC
	}
	checkNeigh := func(t *testing.T, after string) {
		t.Helper()
		for name, a := range watched {
			n, err := l.ClientNeigh(a)
			if err != nil {
				t.Fatal(err)
			}
			if n.MAC != "" && n.MAC != baseline[name] {
				owner := "?"
				if o := l.NodeByMAC(n.MAC); o != nil {
					owner = o.Name
				}
				t.Errorf("after %s: the client's neighbour entry for the %s %s moved from %s to %s (%s)", after, name, a, baseline[name], n.MAC, owner)
			}
		}
	}

	teamB := netip.AddrFrom4([4]byte{10, byte(l.X), 8, 3}) // free, in team-b's pool
	ips := func(a netip.Addr) lab.ServiceOption { return lab.Annotate(lbsvc.AnnotationLoadBalancerIPs, a.String()) }
	attacks := []hostileAttack{
		{name: "router address", addr: r.LAN, opts: []lab.ServiceOption{ips(r.LAN)}},
		{name: "another host on the link", addr: l.IP4(1), opts: []lab.ServiceOption{ips(l.IP4(1))}},
		// A value only: nothing is ever sent to it.
		{name: "public address", addr: netip.MustParseAddr("203.0.113.7"), opts: []lab.ServiceOption{ips(netip.MustParseAddr("203.0.113.7"))}},
		{name: "ClusterIP", addr: clusterIP, opts: []lab.ServiceOption{ips(clusterIP)}},
		{name: "node address", addr: l.Nodes[1].IP4, opts: []lab.ServiceOption{ips(l.Nodes[1].IP4)}},
		{name: "control-plane VIP", addr: cpVIP, opts: []lab.ServiceOption{ips(cpVIP)}},
		{name: "another namespace's pool address", addr: teamB, opts: []lab.ServiceOption{ips(teamB)}},
		{name: "forged DHCP Lease", addr: r.LAN, opts: []lab.ServiceOption{lab.Annotate(lbsvc.AnnotationLoadBalancerIPs, "0.0.0.0")},
			prepare: func(ctx context.Context, t *testing.T, tenant kubernetes.Interface) {
				// What a DHCP record looked like in the Service's namespace.
				forged := &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "kubevip-forged-dhcp", Namespace: hostileNS,
					Labels:      map[string]string{"vip.io/dhcp": "true", "app.kubernetes.io/managed-by": "vip-agent"},
					Annotations: map[string]string{"vip.io/dhcp-address": r.LAN.String(), "vip.io/dhcp-service": "forged-dhcp"}}}
				if _, err := tenant.CoordinationV1().Leases(hostileNS).Create(ctx, forged, metav1.CreateOptions{}); err != nil {
					t.Fatalf("the tenant may write Leases in its namespace: %v", err)
				}
			}},
		{name: "cross-namespace share", addr: victim.VIP, opts: []lab.ServiceOption{ips(victim.VIP),
			lab.Annotate("vip.io/sharing-key", "k"), lab.Annotate("vip.io/sharing-cross-namespace", victimNS), lab.Port(8080)}},
		{name: "management interface", opts: []lab.ServiceOption{lab.Annotate(lbsvc.AnnotationServiceInterface, "mgmt0")},
			reason: agent.ReasonInterfaceNotAllowed, served: true},
		{name: "UPnP without opt-in", opts: []lab.ServiceOption{lab.Annotate(lbsvc.AnnotationForwardUPNP, "true")},
			reason: upnpforward.ReasonUPnPNotAllowed, served: true},
	}

	var refused []string
	for i, a := range attacks {
		name := fmt.Sprintf("atk%d", i)
		ok := t.Run(a.name, func(t *testing.T) {
			if a.prepare != nil {
				a.prepare(ctx, t, tenant)
			}
			svc := tenantService(hostileNS, name, a.opts...)
			if _, err := tenant.CoreV1().Services(hostileNS).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
				t.Fatalf("the tenant may create Services: %v", err)
			}
			if a.served {
				// Ready endpoints, as the EndpointSlice controller would list
				// for the responders: a Service without any is not announced.
				var nodes []string
				for _, n := range l.Nodes {
					nodes = append(nodes, n.Name)
				}
				if err := l.SetEndpoints(ctx, hostileNS, name, nodes...); err != nil {
					t.Fatal(err)
				}
			}
			warn := waitWarning(ctx, t, l, hostileNS, name, a.reason)
			t.Logf("refused: %s", warn)
			got, err := l.Admin.CoreV1().Services(hostileNS).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, in := range lab.Ingress(got) {
				if a.addr.IsValid() && in == a.addr {
					t.Errorf("status carries the refused address %s", a.addr)
				}
			}
			if a.served {
				addrs, err := l.WaitAddress(ctx, hostileNS, name)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := l.WaitServedBy(ctx, addrs[0], lab.ServicePort, func(string) bool { return true }); err != nil {
					t.Errorf("the Service is not served on the admin's interface: %v", err)
				}
			}
			checkNeigh(t, a.name)
		})
		if ok {
			refused = append(refused, a.name)
		}
	}
	close(stop)
	<-done
	checkNeigh(t, "every attempt")
	// Status never carried a refused address, checked once more at the end.
	for i, a := range attacks {
		got, err := l.Admin.CoreV1().Services(hostileNS).Get(ctx, fmt.Sprintf("atk%d", i), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range lab.Ingress(got) {
			if a.addr.IsValid() && in == a.addr {
				t.Errorf("%s: status carries the refused address %s", a.name, a.addr)
			}
		}
	}
	t.Logf("refused with a Warning: %s", strings.Join(refused, ", "))
	t.Logf("legitimate Service %s: %d answers, %d failures during the attacks", legit, served.Load(), failed.Load())
	if failed.Load() > 0 || served.Load() == 0 {
		t.Errorf("the legitimate Service did not answer throughout: %d failures (last %v), %d answers", failed.Load(), lastErr.Load(), served.Load())
	}
}

// tenantClient returns a client for the ServiceAccount hostileNS/tenant
// bound, in its namespace, to exactly the rules of the stock edit role as
// the API server bootstraps them (no controller-manager aggregates edit in
// the lab, so the rules of system:aggregate-to-edit and -view are copied).
func tenantClient(ctx context.Context, t *testing.T, l *lab.Lab) kubernetes.Interface {
	t.Helper()
	var rules []rbacv1.PolicyRule
	for _, name := range []string{"system:aggregate-to-edit", "system:aggregate-to-view"} {
		cr, err := l.Admin.RbacV1().ClusterRoles().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("bootstrap ClusterRole %s: %v", name, err)
		}
		rules = append(rules, cr.Rules...)
	}
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "tenant-edit"}, Rules: rules}
	if _, err := l.Admin.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "tenant-edit", Namespace: hostileNS},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "tenant-edit"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "tenant", Namespace: hostileNS}}}
	if _, err := l.Admin.RbacV1().RoleBindings(hostileNS).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tok, err := l.Env.ServiceAccountToken(ctx, hostileNS, "tenant")
	if err != nil {
		t.Fatal(err)
	}
	c, err := kubernetes.NewForConfig(l.Env.TokenConfig(tok))
	if err != nil {
		t.Fatal(err)
	}
	// The tenant cannot touch the admin's policy or the agents' Leases.
	if _, err := c.CoreV1().ConfigMaps("kube-system").Get(ctx, "kubevip", metav1.GetOptions{}); err == nil {
		t.Fatal("the tenant can read kube-system/kubevip: it is not the stock edit role")
	}
	return c
}

// tenantService is a LoadBalancer Service for the responders.
func tenantService(ns, name string, opts ...lab.ServiceOption) *v1.Service {
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1.ServiceSpec{
			Type:     v1.ServiceTypeLoadBalancer,
			Selector: map[string]string{"app": "responder"},
			Ports: []v1.ServicePort{{Name: "http", Protocol: v1.ProtocolTCP, Port: lab.ServicePort,
				TargetPort: intstr.FromInt32(lab.ServicePort)}},
		},
	}
	for _, o := range opts {
		o(svc)
	}
	return svc
}

// waitWarning waits for a Warning Event on the Service (with reason, when
// given) and returns "reason: message".
func waitWarning(ctx context.Context, t *testing.T, l *lab.Lab, ns, name, reason string) string {
	t.Helper()
	var got string
	err := lab.Poll(ctx, 100*time.Millisecond, func() (bool, error) {
		list, err := l.Admin.CoreV1().Events(ns).List(ctx, metav1.ListOptions{
			FieldSelector: "involvedObject.name=" + name + ",type=Warning"})
		if err != nil {
			return false, err
		}
		for _, e := range list.Items {
			if reason == "" || e.Reason == reason {
				got = e.Reason + ": " + e.Message
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no Warning Event%s on %s/%s: %v", map[bool]string{true: " " + reason, false: ""}[reason != ""], ns, name, err)
	}
	return got
}
