package listwatch

import (
	"context"
	"sync"
	"sync/atomic"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/cache"
)

// OnForbidden sets inf's watch error handler so that a list or watch the
// API server forbids (a missing RBAC rule) calls denied once, with the
// first such error, instead of client-go's error line on every retry.
// Other errors go to client-go's default handler. The returned flag turns
// true on the first refusal, so that callers can stop waiting for an
// informer that cannot sync. Call it before the informer starts.
func OnForbidden(inf cache.SharedIndexInformer, denied func(error)) *atomic.Bool {
	var flag atomic.Bool
	var once sync.Once
	_ = inf.SetWatchErrorHandlerWithContext(func(ctx context.Context, r *cache.Reflector, err error) {
		if !apierrors.IsForbidden(err) {
			cache.DefaultWatchErrorHandler(ctx, r, err)
			return
		}
		once.Do(func() {
			flag.Store(true)
			denied(err)
		})
	})
	return &flag
}
