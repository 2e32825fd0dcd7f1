//go:build e2e

package e2e

import (
	"net/netip"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vip-lb/vip/e2e/lab"
	"github.com/vip-lb/vip/pkg/lbsvc"
)

// TestHostileTenantInPool: the administrator made a mistake and the
// tenant's own pool holds the router's address and another host's. The
// tenant requests them: the new owner's ARP probe gets an answer from a MAC
// that is no vip node's, so nothing is announced (Warning AddressInUse),
// vip-ccm takes the address out of status, and the client's neighbour
// entries for the router and the host never change.
func TestHostileTenantInPool(t *testing.T) {
	l := l2Lab(t, lab.Options{
		Namespaces: []string{hostileNS},
		Pools: map[string]string{
			"allow-static-outside-pools": "false",
			"cidr-" + hostileNS:          "10.X.0.254/32,10.X.0.1/32",
		},
	})
	r, err := l.AddRouter()
	if err != nil {
		t.Fatal(err)
	}
	ctx := l2Ctx(t, 5*time.Minute)
	tenant := tenantClient(ctx, t, l)
	watched := map[string]netip.Addr{"router": r.LAN, "other host": l.IP4(1)}
	baseline := map[string]string{}
	for name, a := range watched {
		if err := l.ClientPing(ctx, a); err != nil {
			t.Fatalf("client ping %s: %v", name, err)
		}
		n, err := l.ClientNeigh(a)
		if err != nil || n.MAC == "" {
			t.Fatalf("client neighbour entry for %s: %+v, %v", name, n, err)
		}
		baseline[name] = n.MAC
	}
	i := 0
	for name, a := range watched {
		svcName := []string{"inpool-a", "inpool-b"}[i]
		i++
		t.Run(name, func(t *testing.T) {
			svc := tenantService(hostileNS, svcName, lab.Annotate(lbsvc.AnnotationLoadBalancerIPs, a.String()))
			if _, err := tenant.CoreV1().Services(hostileNS).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := l.SetEndpoints(ctx, hostileNS, svcName, nodeNames(l)...); err != nil {
				t.Fatal(err)
			}
			t.Logf("refused: %s", waitWarning(ctx, t, l, hostileNS, svcName, "AddressInUse"))
			err := lab.Poll(ctx, 100*time.Millisecond, func() (bool, error) {
				got, err := l.Admin.CoreV1().Services(hostileNS).Get(ctx, svcName, metav1.GetOptions{})
				if err != nil {
					return false, err
				}
				for _, in := range lab.Ingress(got) {
					if in == a {
						return false, nil
					}
				}
				return true, nil
			})
			if err != nil {
				t.Errorf("status still carries %s: %v", a, err)
			}
			for wname, wa := range watched {
				n, err := l.ClientNeigh(wa)
				if err != nil {
					t.Fatal(err)
				}
				if n.MAC != "" && n.MAC != baseline[wname] {
					t.Errorf("the client's neighbour entry for the %s %s moved from %s to %s", wname, wa, baseline[wname], n.MAC)
				}
			}
		})
	}
}

func nodeNames(l *lab.Lab) []string {
	out := make([]string, len(l.Nodes))
	for i, n := range l.Nodes {
		out[i] = n.Name
	}
	return out
}
