package ccm

import (
	"context"
	"sync"
	"sync/atomic"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

// quietForbidden makes inf say once, in msg with the missing rule and the
// file that grants it, when the API server forbids its list or watch (an
// RBAC older than vip's, such as kube-vip-cloud-provider's own), instead
// of client-go's error line on every retry. Other errors go to client-go's
// default handler. The returned flag turns true on the first refusal, so
// that callers stop waiting for an informer that cannot sync.
func quietForbidden(inf cache.SharedIndexInformer, msg, rule string) *atomic.Bool {
	var denied atomic.Bool
	var once sync.Once
	_ = inf.SetWatchErrorHandlerWithContext(func(ctx context.Context, r *cache.Reflector, err error) {
		if !apierrors.IsForbidden(err) {
			cache.DefaultWatchErrorHandler(ctx, r, err)
			return
		}
		once.Do(func() {
			klog.InfoS(msg+"; grant "+rule+" as in deploy/ccm/rbac.yaml", "err", err)
			denied.Store(true)
		})
	})
	return &denied
}
