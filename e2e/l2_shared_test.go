//go:build e2e

package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vip-lb/vip/e2e/lab"
	"github.com/vip-lb/vip/pkg/lbsvc"
)

// sharedNS is the namespace whose pool allows sharing (allow-share-shared).
const sharedNS = "shared"

// sharedLabOptions are the pools the shared-address subtests need.
func sharedLabOptions(o lab.Options) lab.Options {
	o.Namespaces = append(o.Namespaces, sharedNS)
	if o.Pools == nil {
		o.Pools = map[string]string{}
	}
	o.Pools["cidr-"+sharedNS] = "10.X.7.8/29"
	o.Pools["allow-share-"+sharedNS] = "true"
	return o
}

// createShared creates n Services on one address: the first one gets it
// from the pool, the others request it (different ports, sharing allowed).
func createShared(t *testing.T, l *lab.Lab, prefix string, n int) []l2Service {
	t.Helper()
	first := l2Create(t, l, sharedNS, []string{prefix + "-0"})
	vip := first[0].VIP
	var names []string
	for i := 1; i < n; i++ {
		names = append(names, fmt.Sprintf("%s-%d", prefix, i))
	}
	svcs := first
	for i, name := range names {
		svcs = append(svcs, l2Create(t, l, sharedNS, []string{name},
			lab.Annotate(lbsvc.AnnotationLoadBalancerIPs, vip.String()), lab.Port(int32(lab.ServicePort+1+i)))...)
	}
	for _, s := range svcs {
		if s.VIP != vip {
			t.Fatalf("%s: want the shared address %s", s, vip)
		}
	}
	return svcs
}

// sharedAddress: six Services on one address are announced from one node:
// one Lease for the address, the address bound on that node only, exactly
// one MAC answering ARP. When the owner's port is cut all six move together
// to one node; deleting one of them leaves the other five served.
func (s *l2Suite) sharedAddress(t *testing.T) {
	l := s.l
	svcs := createShared(t, l, "share", 6)
	vip := svcs[0].VIP
	defer func() { l2DeleteAll(t, l, svcs) }()
	ctx := l2Ctx(t, 2*time.Minute)
	owner, err := l.WaitHolder(ctx, sharedNS, svcs[0].Name, func(h string) bool { return h != "" })
	if err != nil {
		t.Fatalf("%v\n%s", err, l.Logs(30))
	}
	checkOneOwner := func(owner string) {
		t.Helper()
		if err := l.WaitBound(ctx, vip, owner); err != nil {
			t.Fatalf("shared %s: %v", vip, err)
		}
		macs, err := l.ArpingMACs(ctx, vip, 3)
		if err != nil {
			t.Fatal(err)
		}
		if want := strings.ToLower(l.Node(owner).MAC); !slices.Equal(macs, []string{want}) {
			t.Fatalf("arping %s: MACs %v, want only %s's %s", vip, macs, owner, want)
		}
		if _, err := l.WaitServedBy(ctx, vip, lab.ServicePort, func(n string) bool { return n == owner }); err != nil {
			t.Fatal(err)
		}
		for _, sv := range svcs {
			if err := lab.Poll(ctx, 50*time.Millisecond, func() (bool, error) {
				return slices.ContainsFunc(l2Events(t, l, sv, "Announcing"), func(m string) bool {
					return strings.Contains(m, "from "+owner)
				}), nil
			}); err != nil {
				t.Fatalf("%s: no Announcing Event from %s: %v", sv, owner, l2Events(t, l, sv, "Announcing"))
			}
		}
	}
	checkOneOwner(owner)
	t.Logf("6 Services on %s: one Lease held by %s, one MAC answers", vip, owner)

	// Owner cut off: the six move together.
	if err := l.CutPort(owner); err != nil {
		t.Fatal(err)
	}
	restored := false
	defer func() {
		if !restored {
			l2Restore(t, l, owner)
		}
	}()
	t0 := time.Now()
	next, err := l.WaitHolder(ctx, sharedNS, svcs[0].Name, func(h string) bool { return h != "" && h != owner })
	if err != nil {
		t.Fatalf("%v\n%s", err, l.Logs(30))
	}
	took := time.Since(t0)
	for _, sv := range svcs {
		if h, _, err := l.LeaseHolder(ctx, sv.NS, sv.Name); err != nil || h != next {
			t.Fatalf("%s held by %q (%v), want %s with the others", sv, h, err, next)
		}
	}
	if err := l.WaitBound(ctx, vip, next); err != nil { // the cut-off owner fences itself and withdraws
		t.Fatal(err)
	}
	macs, err := l.ArpingMACs(ctx, vip, 3)
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.ToLower(l.Node(next).MAC); !slices.Equal(macs, []string{want}) {
		t.Fatalf("after %s was cut off: arping MACs %v, want only %s's %s", owner, macs, next, want)
	}
	t.Logf("owner %s cut off: all 6 Services moved to %s in %v", owner, next, took.Round(time.Millisecond))
	restored = true
	l2Restore(t, l, owner)
	if err := l.WaitSettled(l2Ctx(t, time.Minute), time.Minute); err != nil {
		t.Error(err)
	}
	now, err := l.WaitHolder(ctx, sharedNS, svcs[0].Name, func(h string) bool { return h != "" })
	if err != nil {
		t.Fatal(err)
	}
	checkOneOwner(now)

	// One of them deleted: the other five are still served from one node.
	gone := svcs[3]
	if err := l.DeleteService(ctx, gone.NS, gone.Name); err != nil {
		t.Fatal(err)
	}
	if err := l.ServiceGone(ctx, gone.NS, gone.Name); err != nil {
		t.Fatal(err)
	}
	svcs = slices.Delete(svcs, 3, 4)
	h, exists, err := l.AddressHolder(ctx, vip)
	if err != nil || !exists || h == "" {
		t.Fatalf("after deleting %s: address Lease holder %q exists=%v err=%v", gone, h, exists, err)
	}
	checkOneOwner(h)
	t.Logf("%s deleted: the other 5 still answer from %s", gone, h)
}
