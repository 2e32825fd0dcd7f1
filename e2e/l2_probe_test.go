//go:build e2e

package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vip-lb/vip/e2e/lab"
	"github.com/vip-lb/vip/pkg/lbsvc"
)

// addressInUse: another host on the link (the client namespace) already
// has an address of the pool; a Service asking for it is not announced by
// any node: the elected node's probe got the client's answer, a Warning
// AddressInUse names the client's MAC and the conflict record is written
// for vip-ccm. A Service on a free address is announced as usual (every
// other subtest).
func (s *l2Suite) addressInUse(t *testing.T) {
	l := s.l
	ctx := l2Ctx(t, time.Minute)
	taken := l.GlobalPool4().Addr().Next().Next().Next().Next().Next().Next() // .206
	cidr := taken.String() + "/16"
	if _, err := l.Exec(ctx, l.Client, "ip", "addr", "add", cidr, "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx := l2Ctx(t, 30*time.Second)
		if _, err := l.Exec(ctx, l.Client, "ip", "addr", "del", cidr, "dev", "eth0"); err != nil {
			t.Error(err)
		}
		_ = l.Admin.CoordinationV1().Leases(lab.AgentNamespace).Delete(ctx, lbsvc.ConflictLeaseName(taken), metav1.DeleteOptions{})
	}()
	if _, err := l.CreateService(ctx, "default", "taken", lab.Annotate(lbsvc.AnnotationLoadBalancerIPs, taken.String())); err != nil {
		t.Fatal(err)
	}
	sv := l2Service{NS: "default", Name: "taken", VIP: taken}
	defer func() {
		if err := l.DeleteService(l2Ctx(t, 30*time.Second), sv.NS, sv.Name); err != nil {
			t.Error(err)
		}
	}()
	var rec map[string]string
	if err := lab.Poll(ctx, 50*time.Millisecond, func() (bool, error) {
		le, err := l.Admin.CoordinationV1().Leases(lab.AgentNamespace).Get(ctx, lbsvc.ConflictLeaseName(taken), metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		rec = le.Annotations
		return true, nil
	}); err != nil {
		t.Fatalf("no conflict record for %s: %v\n%s", taken, err, l.Logs(30))
	}
	mac := strings.ToLower(l.ClientMAC)
	if rec[lbsvc.AnnotationAddress] != taken.String() || rec[lbsvc.AnnotationMAC] != mac || l.Node(rec[lbsvc.AnnotationNode]) == nil {
		t.Fatalf("conflict record %v: want address %s, MAC %s and a node", rec, taken, mac)
	}
	if err := lab.Poll(ctx, 50*time.Millisecond, func() (bool, error) {
		return slices.ContainsFunc(l2Events(t, l, sv, "AddressInUse"), func(m string) bool { return strings.Contains(m, mac) }), nil
	}); err != nil {
		t.Fatalf("no AddressInUse Event naming %s: %v", mac, l2Events(t, l, sv, "AddressInUse"))
	}
	for _, n := range l.Nodes {
		vips, err := l.NodeVIPs(n.Name)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(vips, taken) {
			t.Fatalf("%s bound %s although the client answered the probe", n.Name, taken)
		}
	}
	nb, err := l.ClientNeigh(taken)
	if err == nil && nb.MAC != "" && !strings.EqualFold(nb.MAC, mac) {
		t.Fatalf("client's neighbour entry for its own address %s points at %s", taken, nb.MAC)
	}
	t.Logf("%s owned by the client (%s): not announced; record by %s; %s", taken, mac, rec[lbsvc.AnnotationNode],
		fmt.Sprint(l2Events(t, l, sv, "AddressInUse")))
}
