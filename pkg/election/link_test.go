package election

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/vip-lb/vip/pkg/lbsvc"
)

// staticLink is a link on which every member is alive and this node
// connected.
type staticLink struct{}

func (staticLink) Alive(string) bool                    { return true }
func (staticLink) Connected() bool                      { return true }
func (staticLink) SetMembers(map[string]netip.AddrPort) {}
func (staticLink) Age(string) (time.Duration, bool)     { return 0, false }

// linkElector is a bare link-mode Elector with n members (this node
// included), its heartbeat just renewed at the fake clock's now.
func linkElector(t *testing.T, n int) (*Elector, *clocktesting.FakeClock) {
	t.Helper()
	clk := clocktesting.NewFakeClock(time.Unix(1_800_000_000, 0))
	o, err := Options{Client: fake.NewClientset(), NodeName: "node-0", Namespace: "kube-system", Link: staticLink{}, LinkAddress: "10.0.0.1:7947",
		Clock: clk}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	e := &Elector{o: o, self: "node-0", nodes: map[string]*nodeState{}}
	for i := range n {
		e.nodes[fmt.Sprintf("node-%d", i)] = &nodeState{seen: clk.Now()}
	}
	e.hb = heartbeat{everOK: true, lastAttemptOK: true, lastOK: clk.Now(), lease: &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{
		Annotations: map[string]string{AnnotationLink: o.LinkAddress, lbsvc.AnnotationNodeReady: "true"}}}}
	e.selfSeen = clk.Now()
	return e, clk
}

// The membership renewal period grows with the member count so that the
// cluster writes at most 1/MemberPeriodPerNode renewals per second; the
// timeout keeps its ratio to the period.
func TestMemberTimingScalesWithMembers(t *testing.T) {
	for _, tc := range []struct {
		n               int
		period, timeout time.Duration
	}{
		{1, DefaultMemberPeriod, DefaultMemberTimeout},
		{3, DefaultMemberPeriod, DefaultMemberTimeout},
		{8, DefaultMemberPeriod, DefaultMemberTimeout},
		{20, 24 * time.Second, 72 * time.Second},
		{50, 60 * time.Second, 180 * time.Second},
		{100, 120 * time.Second, 360 * time.Second},
	} {
		e, _ := linkElector(t, tc.n)
		e.mu.Lock()
		p, to := e.memberTimingLocked()
		e.mu.Unlock()
		if p != tc.period || to != tc.timeout {
			t.Errorf("%d members: period %v timeout %v, want %v %v", tc.n, p, to, tc.period, tc.timeout)
		}
		if writes := float64(tc.n) / p.Seconds(); tc.n >= 20 && writes > 1 {
			t.Errorf("%d members: %.2f renewals/s cluster-wide", tc.n, writes)
		}
	}
}

// At 100 members a renewal is due only after the scaled period, and a
// member not renewed for longer than the old 30 s timeout still exists;
// at 3 members the defaults hold.
func TestMemberRenewalAndFreshnessFollowTheCount(t *testing.T) {
	e, clk := linkElector(t, 100)
	clk.Step(119 * time.Second)
	if e.heartbeatDue(clk.Now()) {
		t.Error("100 members: renewal due before 120 s")
	}
	clk.Step(time.Second)
	if !e.heartbeatDue(clk.Now()) {
		t.Error("100 members: renewal not due at 120 s")
	}
	e.mu.Lock()
	e.selfSeen = clk.Now() // our own renewal came back: the watch delivers
	e.mu.Unlock()
	if !e.MemberFresh("node-7") {
		t.Error("100 members: a member renewed 120 s ago counts as gone")
	}
	clk.Step(240 * time.Second)
	e.mu.Lock()
	e.selfSeen = clk.Now()
	e.mu.Unlock()
	if e.MemberFresh("node-7") {
		t.Error("100 members: a member silent on the API for 360 s still counts as existing")
	}

	e, clk = linkElector(t, 3)
	clk.Step(DefaultMemberPeriod)
	if !e.heartbeatDue(clk.Now()) {
		t.Error("3 members: renewal not due after the default period")
	}
	clk.Step(DefaultMemberTimeout - DefaultMemberPeriod)
	e.mu.Lock()
	e.selfSeen = clk.Now()
	e.mu.Unlock()
	if e.MemberFresh("node-1") {
		t.Error("3 members: a member silent on the API for 30 s still counts as existing")
	}
}
