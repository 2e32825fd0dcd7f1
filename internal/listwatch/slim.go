package listwatch

import (
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/tools/cache"
)

// Slim is an informer transform (SharedIndexInformer.SetTransform,
// informers.WithTransform) that drops what vip never reads before an object
// enters the cache: metadata.managedFields of every object (the server-side
// apply bookkeeping, often the largest part of a small object) and a Node's
// status.images (the largest part of a real Node). An update written from a
// cached object still keeps the server's managedFields: nil means "unchanged"
// to the API server.
//
// With 1000 Services the cached Services, EndpointSlices and Leases are most
// of the agent's heap; see docs/benchmarks.md.
func Slim(obj any) (any, error) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		o, err := Slim(d.Obj)
		d.Obj = o
		return d, err
	}
	if m, err := meta.Accessor(obj); err == nil {
		m.SetManagedFields(nil)
	}
	if n, ok := obj.(*v1.Node); ok {
		n.Status.Images = nil
	}
	return obj, nil
}

var _ cache.TransformFunc = Slim
