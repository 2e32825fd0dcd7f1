package ccm

import (
	"sync/atomic"

	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/vip-lb/vip/internal/listwatch"
)

// quietForbidden makes inf say once, in msg with the missing rule and the
// file that grants it, when the API server forbids its list or watch (an
// RBAC older than vip's, such as kube-vip-cloud-provider's own). The
// returned flag turns true on the first refusal.
func quietForbidden(inf cache.SharedIndexInformer, msg, rule string) *atomic.Bool {
	return listwatch.OnForbidden(inf, func(err error) {
		klog.InfoS(msg+"; grant "+rule+" as in deploy/ccm/rbac.yaml", "err", err)
	})
}
