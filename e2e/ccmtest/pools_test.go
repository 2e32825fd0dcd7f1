package ccmtest

import (
	"context"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestPoolProblems: a missing ConfigMap, unparsable entries, an exhausted
// pool, a broken edit. Each is an Event, never a crash, and never stops what
// still works. The pools here are namespace-scoped only, so a namespace can
// run out.
func TestPoolProblems(t *testing.T) {
	h := New(t)
	cs := h.Admin
	ctx := tctx(t)
	ccm := h.StartCCM("ccm", "--retry-after=2s", "--v=2")
	// .0 is an ordinary address in these pools (tested in pkg/ipam).
	setPools := func(_ context.Context, data map[string]string) {
		data["skip-dot0-dot255"] = "false"
		h.SetPools(ctx, data)
	}

	t.Run("MissingConfigMap", func(t *testing.T) {
		create(t, cs, LBService("small", "early"))
		ev := waitEvent(t, cs, "small", "Service", "early", v1.EventTypeWarning, "PoolConfigMissing")
		if !strings.Contains(ev.Message, "kube-system/kubevip") {
			t.Errorf("event does not name the ConfigMap: %q", ev.Message)
		}
		assertPending(t, cs, "small", "early", pendingFor)
		if ok, err := ccm.Exited(); ok {
			t.Fatalf("vip-ccm exited without its ConfigMap: %v", err)
		}
	})

	t.Run("BadEntriesAreSkipped", func(t *testing.T) {
		setPools(ctx, map[string]string{
			"cidr-small":     "10.50.0.0/31, not-a-cidr, 10.50.0.300/32",
			"range-broken":   "10.51.0.9-10.51.0.1",
			"cidr-fine":      "10.52.0.0-10.52.0.3",
			"allow-share-x":  "maybe",
			"search-order":   "sideways",
			"interface-bad0": "a/b",
		})
		ev := waitEvent(t, cs, PoolsNamespace, "ConfigMap", PoolsName, v1.EventTypeWarning, "PoolConfigInvalid")
		for _, want := range []string{"not-a-cidr", "10.51.0.9-10.51.0.1", "maybe", "sideways"} {
			if !strings.Contains(ev.Message, want) {
				t.Errorf("PoolConfigInvalid event does not mention %q: %q", want, ev.Message)
			}
		}
		// The Service that waited gets the first good address of its key.
		wantIP(t, cs, "small", "early", "10.50.0.0")
		create(t, cs, LBService("fine", "f1"))
		wantIP(t, cs, "fine", "f1", "10.52.0.0")
	})

	t.Run("ExhaustedThenGrown", func(t *testing.T) {
		create(t, cs, LBService("small", "second"))
		wantIP(t, cs, "small", "second", "10.50.0.1")
		create(t, cs, LBService("small", "third"))
		ev := waitEvent(t, cs, "small", "Service", "third", v1.EventTypeWarning, "NoAddressAvailable")
		if !strings.Contains(ev.Message, "cidr-small") {
			t.Errorf("NoAddressAvailable event does not name the pool: %q", ev.Message)
		}
		assertPending(t, cs, "small", "third", pendingFor)
		// Other namespaces keep working.
		create(t, cs, LBService("fine", "f2"))
		wantIP(t, cs, "fine", "f2", "10.52.0.1")
		// The pool grows: the waiting Service gets an address on its own.
		setPools(ctx, map[string]string{
			"cidr-small": "10.50.0.0/31,10.50.0.8/32",
			"cidr-fine":  "10.52.0.0-10.52.0.3",
		})
		wantIP(t, cs, "small", "third", "10.50.0.8")
	})

	t.Run("BrokenEditKeepsLastGood", func(t *testing.T) {
		// cidr-fine is broken by an edit: its last good value stays in
		// force, assignments are untouched, and new Services are still served.
		setPools(ctx, map[string]string{
			"cidr-small": "10.50.0.0/31,10.50.0.8/32",
			"cidr-fine":  "10.52.0.0/33",
		})
		waitFor(t, "a PoolConfigInvalid event about cidr-fine", func() bool {
			evs, _ := Events(ctx, cs, PoolsNamespace, "ConfigMap", PoolsName, "PoolConfigInvalid")
			for _, e := range evs {
				if strings.Contains(e.Message, "10.52.0.0/33") {
					return true
				}
			}
			return false
		})
		create(t, cs, LBService("fine", "f3"))
		wantIP(t, cs, "fine", "f3", "10.52.0.2")
		for name, want := range map[string]string{"f1": "10.52.0.0", "f2": "10.52.0.1"} {
			if got := getIPs(t, h, "fine", name); len(got) != 1 || got[0] != want {
				t.Errorf("fine/%s changed to %v", name, got)
			}
		}
	})

	t.Run("ShrunkPoolKeepsAssignments", func(t *testing.T) {
		// Pools edited so that existing addresses fall outside: nothing moves.
		setPools(ctx, map[string]string{"cidr-fine": "10.52.0.3/32"})
		time.Sleep(time.Second)
		create(t, cs, LBService("fine", "f4"))
		wantIP(t, cs, "fine", "f4", "10.52.0.3")
		for name, want := range map[string]string{"f1": "10.52.0.0", "f2": "10.52.0.1", "f3": "10.52.0.2"} {
			if got := getIPs(t, h, "fine", name); len(got) != 1 || got[0] != want {
				t.Errorf("fine/%s changed to %v", name, got)
			}
		}
	})

	t.Run("StaticOutsidePoolsSetting", func(t *testing.T) {
		setPools(ctx, map[string]string{"cidr-fine": "10.52.0.3/32", "allow-static-outside-pools": "false"})
		time.Sleep(time.Second)
		create(t, cs, LBService("fine", "outside", WithAnnotation(annIPs, "10.199.9.9")))
		waitEvent(t, cs, "fine", "Service", "outside", v1.EventTypeWarning, "AddressOutsidePools")
		assertPending(t, cs, "fine", "outside", 0)
		// Allowed again (the default): the same request is served on retry.
		setPools(ctx, map[string]string{"cidr-fine": "10.52.0.3/32"})
		wantIP(t, cs, "fine", "outside", "10.199.9.9")
	})

	t.Run("DeletedConfigMap", func(t *testing.T) {
		if err := cs.CoreV1().ConfigMaps(PoolsNamespace).Delete(ctx, PoolsName, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		// Assignments stay; the process stays up.
		if got := getIPs(t, h, "fine", "f1"); len(got) != 1 || got[0] != "10.52.0.0" {
			t.Errorf("fine/f1 changed to %v", got)
		}
		if ok, err := ccm.Exited(); ok {
			t.Fatalf("vip-ccm exited: %v", err)
		}
	})
}
