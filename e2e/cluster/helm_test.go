//go:build cluster

package cluster

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// helmInstall replaces the kustomize install (folder kustomization) by
// `helm install` of deploy/helm/vip with only the images and the pool set:
// the chart's vip-ccm gives a new Service an address, its agents announce
// it and the one the old install served, and both answer through
// kube-proxy.
func helmInstall(t *testing.T, c *Cluster, kustomization, ns, app string, old netip.Addr) {
	ctx := context.Background()
	t0 := time.Now()
	if err := c.UninstallKustomize(ctx, kustomization); err != nil {
		t.Fatal(err)
	}
	t.Logf("kustomize install deleted in %v", since(t0))
	t1 := time.Now()
	if err := c.InstallVIPHelm(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("FIGURE helm install (vip-ccm available, vip-agent ready on every node): %v", since(t1))
	if out, err := c.Helm(ctx, "list", "--namespace", "kube-system"); err != nil || !strings.Contains(out, HelmRelease) {
		t.Fatalf("helm list: %v\n%s", err, out)
	}
	// The objects are the release's: Helm marks what it created.
	ds, err := c.Admin.AppsV1().DaemonSets(AgentNamespace).Get(ctx, "vip-agent", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := ds.Annotations["meta.helm.sh/release-name"]; got != HelmRelease {
		t.Fatalf("DaemonSet vip-agent: release annotation %q, want %q (not the chart's)", got, HelmRelease)
	}
	addr, err := c.ExposeLB(ctx, ns, app+"-helm", app, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []netip.Addr{addr, old} {
		wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		var last error
		err := Poll(wctx, 50*time.Millisecond, func() (bool, error) {
			body, err := Get(wctx, a, 80, 2*time.Second)
			if err != nil {
				last = err
				return false, nil
			}
			_, err = ParseAnswer(body)
			return err == nil, err
		})
		cancel()
		if err != nil {
			t.Fatalf("VIP %s under the chart's vip: %v (last error %v)", a, err, last)
		}
		owner, err := c.WaitOwner(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("helm install: %s answers, owned by %s", a, owner)
	}
}
