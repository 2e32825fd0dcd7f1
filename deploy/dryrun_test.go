package deploy_test

import (
	"context"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vip-lb/vip/pkg/testbed"
)

// serviceMonitorCRD is a minimal prometheus-operator ServiceMonitor CRD:
// the fields the chart writes are typed as upstream types them, the rest is
// kept as given.
const serviceMonitorCRD = `
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: ServiceMonitor, listKind: ServiceMonitorList, plural: servicemonitors, singular: servicemonitor}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [selector]
              properties:
                selector: {type: object, x-kubernetes-preserve-unknown-fields: true}
                namespaceSelector:
                  type: object
                  properties:
                    any: {type: boolean}
                    matchNames: {type: array, items: {type: string}}
                endpoints:
                  type: array
                  items:
                    type: object
                    properties:
                      port: {type: string}
                      path: {type: string}
                      scheme: {type: string, enum: [http, https]}
                      interval: {type: string, pattern: '^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$'}
                      bearerTokenFile: {type: string}
                      tlsConfig: {type: object, x-kubernetes-preserve-unknown-fields: true}
`

// TestServerSideDryRun has the real API server validate and admit every
// rendering (server-side apply, dryRun=All): kustomize base and overlays,
// the chart with default and with custom values (its ServiceMonitor against
// a minimal CRD).
func TestServerSideDryRun(t *testing.T) {
	all := renderings(t)
	env := testbed.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := env.ApplyYAML(ctx, []byte(serviceMonitorCRD)); err != nil {
		t.Fatal(err)
	}
	probe := []byte("apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: probe, namespace: kube-system}\nspec: {selector: {}}\n")
	for err := env.DryRunYAML(ctx, probe); err != nil; err = env.DryRunYAML(ctx, probe) {
		if ctx.Err() != nil {
			t.Fatalf("ServiceMonitor CRD not served: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for name, data := range all {
		t.Run(name, func(t *testing.T) {
			if err := env.DryRunYAML(ctx, data); err != nil {
				t.Fatal(err)
			}
		})
	}
	// A dry run stores nothing.
	_, err := env.AdminClient().AppsV1().DaemonSets("kube-system").Get(ctx, "vip-agent", metav1.GetOptions{})
	if !apierrors.IsNotFound(err) {
		t.Errorf("after dry runs, DaemonSet vip-agent: %v; want NotFound", err)
	}
	// And it validates: values that render an invalid object are refused.
	bad := render(t, "helm", "deploy/helm/vip", "--set", "ccm.securePort=70000")
	if err := env.DryRunYAML(ctx, bad); err == nil || !strings.Contains(err.Error(), "70000") {
		t.Errorf("securePort 70000: dry run error %v; want a validation error naming 70000", err)
	}
}
