package ccmtest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// createMany creates n LoadBalancer Services name-0..name-(n-1) in ns with
// parallel workers.
func createMany(t *testing.T, cs kubernetes.Interface, ns, prefix string, from, n int) {
	t.Helper()
	if err := CreateServices(tctx(t), cs, ns, prefix, from, n, 16); err != nil {
		t.Fatal(err)
	}
}

// waitAllAssigned waits until every Service in ns has an address and
// returns them.
func waitAllAssigned(t *testing.T, cs kubernetes.Interface, ns string, n int, timeout time.Duration) []v1.Service {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got, svcs, err := CountWithAddress(tctx(t), cs, ns)
		if err == nil && got >= n && len(svcs) == n {
			return svcs
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d Services in %s have an address after %v (err %v)", got, n, ns, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// snapshot maps each Service key to its addresses.
func snapshot(svcs []v1.Service) map[string]string {
	out := map[string]string{}
	for _, s := range svcs {
		out[s.Namespace+"/"+s.Name] = fmt.Sprint(IngressIPs(&s))
	}
	return out
}

// TestConcurrentSyncsAndRestart: 200 Services with 10 concurrent syncs get
// distinct addresses; a killed and restarted vip-ccm keeps every assignment
// and never hands a held address out again, even after the pools were
// edited while it was down.
func TestConcurrentSyncsAndRestart(t *testing.T) {
	h := New(t)
	cs := h.Admin
	ctx := tctx(t)
	// 254 usable addresses in two pools that overlap, for 300 Services.
	h.SetPools(ctx, map[string]string{
		"cidr-global":  "10.60.0.0/25,10.60.0.64/26",
		"range-global": "10.60.0.100-10.60.0.253",
	})
	args := []string{"--concurrent-service-syncs=10", "--retry-after=2s"}
	ccm := h.StartCCM("ccm-1", args...)

	createMany(t, cs, "scale", "s", 0, 200)
	svcs := waitAllAssigned(t, cs, "scale", 200, 2*time.Minute)
	noDuplicates(t, svcs)
	before := snapshot(svcs)

	// Crash: SIGKILL, no chance to clean up.
	ccm.Kill()
	// Edited while down: the pools shrink to addresses already held and a
	// few new ones. Nothing held may move; nothing held may be handed out.
	h.SetPools(ctx, map[string]string{
		"cidr-global":  "10.60.0.0/24",
		"range-global": "10.60.1.0-10.60.1.99",
	})
	createMany(t, cs, "scale", "s", 200, 100)
	h.StartCCM("ccm-2", args...)
	svcs = waitAllAssigned(t, cs, "scale", 300, 2*time.Minute)
	noDuplicates(t, svcs)
	after := snapshot(svcs)
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s changed from %s to %s across the restart", k, v, after[k])
		}
	}
	// The restarted one also knows the old assignments when releasing: a
	// deleted Service's address is reused.
	victim := svcs[0]
	deleteSvc(t, cs, victim.Namespace, victim.Name)
	create(t, cs, LBService("scale", "reuse"))
	if got := waitIP(t, cs, "scale", "reuse"); got != IngressIPs(&victim)[0] {
		t.Logf("released %v, new Service got %s (any free address is fine)", IngressIPs(&victim), got)
	}
	l, err := cs.CoreV1().Services("scale").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	noDuplicates(t, l.Items)
}

// TestLeaderFailover: two replicas with leader election; the leader is
// killed while Services are being created. The other takes over, every
// Service gets an address, none twice.
func TestLeaderFailover(t *testing.T) {
	h := New(t)
	cs := h.Admin
	ctx := tctx(t)
	h.SetPools(ctx, map[string]string{"cidr-global": "10.70.0.0/23"})
	le := []string{"--leader-elect=true", "--leader-elect-lease-duration=4s", "--leader-elect-renew-deadline=3s",
		"--leader-elect-retry-period=500ms", "--concurrent-service-syncs=10", "--retry-after=2s"}
	a := h.StartCCM("ccm-a", le...)
	waitFor(t, "ccm-a leads", func() bool { return a.LogContains("Successfully acquired lease") })
	b := h.StartCCM("ccm-b", le...)
	time.Sleep(time.Second)
	if b.LogContains("Successfully acquired lease") {
		t.Fatal("both replicas lead")
	}

	const n = 400
	var created atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ctx := context.Background()
		for i := 0; i < n; i += 20 {
			if err := CreateServices(ctx, cs, "fail", "f", i, 20, 8); err != nil {
				t.Error(err)
				return
			}
			created.Add(20)
		}
	}()
	// Kill the leader once it is in the middle of assigning.
	waitFor(t, "some Services assigned", func() bool {
		got, _, _ := CountWithAddress(ctx, cs, "fail")
		return got >= 100
	})
	a.Kill()
	t.Logf("leader killed after %d Services were created", created.Load())
	wg.Wait()
	svcs := waitAllAssigned(t, cs, "fail", n, 2*time.Minute)
	noDuplicates(t, svcs)
	if !b.LogContains("Successfully acquired lease") {
		t.Error("ccm-b never took over")
	}
}
