package ccm

import (
	"context"
	"errors"
	"fmt"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/cloud-provider/api"
	"k8s.io/klog/v2"
)

// FinalizerLoadBalancerCleanup is the stock service controller's finalizer;
// the class controller uses the same one.
const FinalizerLoadBalancerCleanup = "service.kubernetes.io/load-balancer-cleanup"

// ClassController serves Services whose spec.loadBalancerClass is vip's
// class. The stock service controller skips classed Services, so vip runs
// this small equivalent: finalizer, EnsureLoadBalancer, status.
type ClassController struct {
	class  string
	lb     *LoadBalancer
	client kubernetes.Interface
	lister corelisters.ServiceLister
	synced cache.InformerSynced
	queue  workqueue.TypedRateLimitingInterface[string]
}

// NewClassController wires the controller to the Service informer.
func NewClassController(class string, lb *LoadBalancer, client kubernetes.Interface, si coreinformers.ServiceInformer) *ClassController {
	c := &ClassController{
		class: class, lb: lb, client: client,
		lister: si.Lister(), synced: si.Informer().HasSynced,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "vip-class-services"}),
	}
	ours := func(o any) (*v1.Service, bool) {
		if tomb, ok := o.(cache.DeletedFinalStateUnknown); ok {
			o = tomb.Obj
		}
		svc, ok := o.(*v1.Service)
		return svc, ok && svc.Spec.LoadBalancerClass != nil && *svc.Spec.LoadBalancerClass == class
	}
	enqueue := func(svc *v1.Service) {
		if key, err := cache.MetaNamespaceKeyFunc(svc); err == nil {
			c.queue.Add(key)
		}
	}
	_, _ = si.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(o any) {
			if svc, ok := ours(o); ok {
				enqueue(svc)
			}
		},
		// The API server clears spec.loadBalancerClass when the type changes
		// away from LoadBalancer, so the old object decides too.
		UpdateFunc: func(old, cur any) {
			_, was := ours(old)
			_, is := ours(cur)
			if s, ok := cur.(*v1.Service); ok && (was || is) {
				enqueue(s)
			}
		},
		DeleteFunc: func(o any) {
			if svc, ok := ours(o); ok {
				enqueue(svc)
			}
		},
	})
	return c
}

// Run processes Services with the given number of workers until ctx ends.
func (c *ClassController) Run(ctx context.Context, workers int) {
	defer c.queue.ShutDown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced) {
		return
	}
	for i := 0; i < workers; i++ {
		go wait.UntilWithContext(ctx, c.worker, time.Second)
	}
	<-ctx.Done()
}

func (c *ClassController) worker(ctx context.Context) {
	for c.next(ctx) {
	}
}

func (c *ClassController) next(ctx context.Context) bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	err := c.sync(ctx, key)
	var retry *api.RetryError
	switch {
	case err == nil:
		c.queue.Forget(key)
	case errors.As(err, &retry):
		c.queue.Forget(key)
		c.queue.AddAfter(key, retry.RetryAfter())
	default:
		klog.FromContext(ctx).Info("syncing classed Service failed; will retry", "service", key, "err", err)
		c.queue.AddRateLimited(key)
	}
	return true
}

func (c *ClassController) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	svc, err := c.lister.Services(ns).Get(name)
	if apierrors.IsNotFound(err) {
		c.lb.release(key)
		return nil
	}
	if err != nil {
		return err
	}
	classed := svc.Spec.LoadBalancerClass != nil && *svc.Spec.LoadBalancerClass == c.class
	wants := svc.DeletionTimestamp == nil && svc.Spec.Type == v1.ServiceTypeLoadBalancer && classed
	if !wants {
		if svc.Spec.Type == v1.ServiceTypeLoadBalancer && !classed {
			return nil // an unclassed or foreign Service: not this controller's
		}
		if err := c.lb.EnsureLoadBalancerDeleted(ctx, "", svc); err != nil {
			return err
		}
		if err := c.lb.writeStatus(ctx, svc, &v1.LoadBalancerStatus{}); err != nil {
			return err
		}
		return c.setFinalizer(ctx, svc, false)
	}
	if err := c.setFinalizer(ctx, svc, true); err != nil {
		return err
	}
	st, err := c.lb.EnsureLoadBalancer(ctx, "", svc, nil)
	if err != nil {
		return err
	}
	return c.lb.writeStatus(ctx, svc, st)
}

func (c *ClassController) setFinalizer(ctx context.Context, svc *v1.Service, want bool) error {
	has := false
	var kept []string
	for _, f := range svc.Finalizers {
		if f == FinalizerLoadBalancerCleanup {
			has = true
			continue
		}
		kept = append(kept, f)
	}
	if has == want {
		return nil
	}
	if want {
		kept = append(kept, FinalizerLoadBalancerCleanup)
	}
	patch, err := mergePatch(map[string]any{"metadata": map[string]any{
		"finalizers": kept, "resourceVersion": svc.ResourceVersion}})
	if err != nil {
		return err
	}
	_, err = c.client.CoreV1().Services(svc.Namespace).Patch(ctx, svc.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("updating finalizer of %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	return nil
}
