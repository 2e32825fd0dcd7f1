package manifest

import (
	"context"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"github.com/vip-lb/vip/pkg/testbed"
)

// TestServerDryRun sends every generated manifest, and every file under
// deploy/ rendered by DeployFiles, to a real API server with a server-side
// dry run: admission, defaulting and strict validation must accept each
// object as printed, without warnings (nothing is stored).
func TestServerDryRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver")
	}
	env := testbed.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := env.AdminConfig()
	warnings := &warningRecorder{}
	cfg.WarningHandler = warnings
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	groups, err := restmapper.GetAPIGroupResources(dc)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDiscoveryRESTMapper(groups)
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dryRun := func(t *testing.T, data []byte) {
		t.Helper()
		for _, obj := range decodeStrict(t, data) {
			m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
			if err != nil {
				t.Fatal(err)
			}
			u := &unstructured.Unstructured{Object: m}
			gvk := u.GroupVersionKind()
			mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
			if err != nil {
				t.Fatalf("%s: %v", gvk, err)
			}
			var ri dynamic.ResourceInterface = dyn.Resource(mapping.Resource)
			if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
				ri = dyn.Resource(mapping.Resource).Namespace(u.GetNamespace())
			}
			if _, err := ri.Create(ctx, u, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"}); err != nil {
				t.Errorf("dry-run create %s %s/%s: %v", gvk.Kind, u.GetNamespace(), u.GetName(), err)
			}
			if w := warnings.take(); len(w) > 0 {
				t.Errorf("dry-run create %s %s/%s: API server warnings: %q", gvk.Kind, u.GetNamespace(), u.GetName(), w)
			}
		}
	}
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.o
			o.Image = testImage
			data, err := Render(tc.form, o)
			if err != nil {
				t.Fatal(err)
			}
			dryRun(t, data)
		})
	}
	// The files under deploy/ this package renders (the shipped workloads
	// and RBAC of both programs).
	files, err := DeployFiles()
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		if name == AgentBGPPatchFile || name == AgentLinkPatchFile {
			continue // a patch, not an object: deploy's TestServerSideDryRun sends the patched DaemonSet
		}
		t.Run(name, func(t *testing.T) { dryRun(t, data) })
	}
}

// warningRecorder collects the API server's warnings.
type warningRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warningRecorder) HandleWarningHeader(_ int, _ string, msg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, msg)
}

func (w *warningRecorder) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := w.msgs
	w.msgs = nil
	return m
}
