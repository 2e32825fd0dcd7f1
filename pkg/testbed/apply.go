package testbed

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
)

// fieldManager is the server-side apply field manager used by ApplyYAML.
const fieldManager = "vip-testbed"

// ApplyFile applies every object of the multi-document YAML file at path,
// as ApplyYAML does.
func (e *Env) ApplyFile(ctx context.Context, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("testbed: %w", err)
	}
	if err := e.ApplyYAML(ctx, b); err != nil {
		return fmt.Errorf("%w (file %s)", err, path)
	}
	return nil
}

// ApplyYAML creates (or updates, with server-side apply) every object of a
// multi-document YAML or JSON stream, as user "admin". Kind List is expanded.
// Namespaces are applied first; namespaced objects without a namespace go to
// "default". Resources are mapped through discovery, so any kind the server
// serves works (RBAC, ServiceAccount, ConfigMap, Deployment, DaemonSet, ...).
func (e *Env) ApplyYAML(ctx context.Context, data []byte) error {
	return e.apply(ctx, data, nil)
}

// DryRunYAML server-side applies every object as ApplyYAML does, but with
// dryRun=All: the API server validates and admits each object (defaulting,
// schema, admission) and stores nothing. Kinds whose CRD is not installed
// fail to map.
func (e *Env) DryRunYAML(ctx context.Context, data []byte) error {
	return e.apply(ctx, data, []string{metav1.DryRunAll})
}

func (e *Env) apply(ctx context.Context, data []byte, dryRun []string) error {
	objs, err := decodeObjects(data)
	if err != nil {
		return err
	}
	cfg := e.AdminConfig()
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return fmt.Errorf("testbed: discovery client: %w", err)
	}
	groups, err := restmapper.GetAPIGroupResources(dc)
	if err != nil {
		return fmt.Errorf("testbed: discovery: %w", err)
	}
	mapper := restmapper.NewDiscoveryRESTMapper(groups)
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("testbed: dynamic client: %w", err)
	}
	// Namespaces first, the rest in file order.
	ordered := make([]*unstructured.Unstructured, 0, len(objs))
	for _, o := range objs {
		if o.GroupVersionKind().GroupKind().String() == "Namespace" {
			ordered = append(ordered, o)
		}
	}
	for _, o := range objs {
		if o.GroupVersionKind().GroupKind().String() != "Namespace" {
			ordered = append(ordered, o)
		}
	}
	for _, o := range ordered {
		gvk := o.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return fmt.Errorf("testbed: map %s %s: %w", gvk, o.GetName(), err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			if o.GetNamespace() == "" {
				o.SetNamespace("default")
			}
			ri = dyn.Resource(m.Resource).Namespace(o.GetNamespace())
		}
		if _, err := ri.Apply(ctx, o.GetName(), o, metav1.ApplyOptions{FieldManager: fieldManager, Force: true, DryRun: dryRun}); err != nil {
			return fmt.Errorf("testbed: apply %s %s/%s: %w", gvk.Kind, o.GetNamespace(), o.GetName(), err)
		}
	}
	return nil
}

// decodeObjects splits a YAML/JSON stream into objects, skipping empty
// documents and expanding kind List.
func decodeObjects(data []byte) ([]*unstructured.Unstructured, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []*unstructured.Unstructured
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("testbed: read YAML document %d: %w", i, err)
		}
		var m map[string]any
		if err := utilyaml.Unmarshal(doc, &m); err != nil {
			return nil, fmt.Errorf("testbed: parse YAML document %d: %w", i, err)
		}
		if len(m) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		if u.IsList() {
			l, err := u.ToList()
			if err != nil {
				return nil, fmt.Errorf("testbed: YAML document %d: %w", i, err)
			}
			for j := range l.Items {
				objs = append(objs, &l.Items[j])
			}
			continue
		}
		if u.GetKind() == "" || u.GetAPIVersion() == "" || u.GetName() == "" {
			return nil, fmt.Errorf("testbed: YAML document %d: apiVersion, kind and metadata.name are required", i)
		}
		objs = append(objs, u)
	}
}
