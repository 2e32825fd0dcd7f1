//go:build e2e

package e2e

import (
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vip-lb/vip/e2e/lab"
	"github.com/vip-lb/vip/pkg/lbsvc"
)

// heartbeatPublishes: every agent's heartbeat says it is ready and lists its
// node's interface addresses (IPv4 and IPv6), never an address vip bound.
func (s *l2Suite) heartbeatPublishes(t *testing.T) {
	l := s.l
	svcs := l2Create(t, l, "default", []string{"hb"})
	defer l2DeleteAll(t, l, svcs)
	owner := l2Holders(t, l, svcs)["hb"]
	ctx := l2Ctx(t, time.Minute)
	if err := l.WaitBound(ctx, svcs[0].VIP, owner); err != nil {
		t.Fatal(err)
	}
	for _, n := range l.Nodes {
		var ann map[string]string
		err := lab.Poll(ctx, 100*time.Millisecond, func() (bool, error) {
			hb, err := l.Admin.CoordinationV1().Leases(lab.AgentNamespace).Get(ctx, "vip-node-"+n.Name, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			ann = hb.Annotations
			addrs := strings.Split(ann[lbsvc.AnnotationNodeAddresses], ",")
			return ann[lbsvc.AnnotationNodeReady] == "true" && slices.Contains(addrs, n.IP4.String()), nil
		})
		if err != nil {
			t.Fatalf("%s heartbeat annotations %v: want ready and its address %s: %v", n.Name, ann, n.IP4, err)
		}
		if strings.Contains(","+ann[lbsvc.AnnotationNodeAddresses]+",", ","+svcs[0].VIP.String()+",") {
			t.Fatalf("%s publishes the VIP %s as a node address: %v", n.Name, svcs[0].VIP, ann)
		}
	}
	t.Logf("heartbeats: ready, node addresses published, VIP %s (bound on %s) not among them", svcs[0].VIP, owner)
}
