//go:build cluster

package cluster

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vip-lb/vip/pkg/election"
	"github.com/vip-lb/vip/pkg/manifest"
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
	// The chart's default is --liveness=link with the key Secret it drew:
	// every ready agent read the mounted key and publishes its link address.
	if _, err := c.Admin.CoreV1().Secrets(AgentNamespace).Get(ctx, manifest.LinkKeySecret, metav1.GetOptions{}); err != nil {
		t.Fatalf("the chart's key Secret: %v", err)
	}
	leases, err := c.Admin.CoordinationV1().Leases(AgentNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	linked := 0
	for _, l := range leases.Items {
		if strings.HasPrefix(l.Name, election.HeartbeatPrefix) && l.Annotations[election.AnnotationLink] != "" {
			linked++
		}
	}
	if linked < int(ds.Status.DesiredNumberScheduled) {
		t.Fatalf("%d heartbeat Leases carry %s, want one per agent (%d): the agents do not run --liveness=link",
			linked, election.AnnotationLink, ds.Status.DesiredNumberScheduled)
	}
	t.Logf("helm install: %d agents run --liveness=link", linked)
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
