package ccm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/apimachinery/pkg/util/wait"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/cloud-provider/api"
	"k8s.io/klog/v2"

	"github.com/vip-lb/vip/pkg/lbsvc"
)

// FinalizerLoadBalancerCleanup is the stock service controller's finalizer;
// vip's service controller uses the same one, so Services served by
// kube-vip-cloud-provider before keep working.
const FinalizerLoadBalancerCleanup = "service.kubernetes.io/load-balancer-cleanup"

// Event reasons of the service controller, the stock controller's own
// (same reasons and messages, recorded as component "service-controller").
const (
	ReasonEnsuring   = "EnsuringLoadBalancer"
	ReasonEnsured    = "EnsuredLoadBalancer"
	ReasonDeleting   = "DeletingLoadBalancer"
	ReasonDeleted    = "DeletedLoadBalancer"
	ReasonSyncFailed = "SyncLoadBalancerFailed"
)

// Retry delays after an error that names none (as the stock controller).
const (
	minRetryDelay = 5 * time.Second
	maxRetryDelay = 300 * time.Second
)

// ServiceController is the one controller of vip-ccm that writes
// LoadBalancer Service status. It serves Services without
// spec.loadBalancerClass (unless the class rule says only the class) and
// Services of vip's class, never another class, and replaces the stock
// service controller of the cloud-provider library with the same visible
// behaviour: the load-balancer-cleanup finalizer is added before an address
// is given and removed once it is released (deletion, or the type changed
// away from LoadBalancer, when status is cleared too); the stock Event
// reasons; retries with backoff, or after the delay a RetryError names;
// status written only when it changes.
//
// It watches no Nodes: the stock controller called UpdateLoadBalancer on
// node-set changes, and LoadBalancer.UpdateLoadBalancer does nothing, since
// vip's addresses do not depend on the node set (the never-assignable node
// addresses are LoadBalancer's own Node informer's business).
type ServiceController struct {
	lb       *LoadBalancer
	client   kubernetes.Interface
	lister   corelisters.ServiceLister
	synced   cache.InformerSynced
	queue    workqueue.TypedRateLimitingInterface[string]
	recorder record.EventRecorder
	// all: also record the informational Normal Events (QuietServiceEvent).
	all bool
}

// NewServiceController wires the controller to the Service informer. client
// writes finalizers and status; rec records the controller's Events (see
// NewServiceEventRecorder); all keeps the informational ones.
func NewServiceController(lb *LoadBalancer, client kubernetes.Interface, si coreinformers.ServiceInformer, rec record.EventRecorder, all bool) *ServiceController {
	c := &ServiceController{
		lb: lb, client: client, recorder: rec, all: all,
		lister: si.Lister(), synced: si.Informer().HasSynced,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](minRetryDelay, maxRetryDelay),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "vip-service"}),
	}
	_, _ = si.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(o any) {
			if svc, ok := o.(*v1.Service); ok && c.inScope(svc) && (svc.Spec.Type == v1.ServiceTypeLoadBalancer || needsCleanup(svc)) {
				c.enqueue(svc)
			}
		},
		// The API server clears spec.loadBalancerClass when the type changes
		// away from LoadBalancer, so the old object decides too. Status and
		// finalizer changes (this controller's own writes) are no reason.
		UpdateFunc: func(old, cur any) {
			o, ok1 := old.(*v1.Service)
			s, ok2 := cur.(*v1.Service)
			if ok1 && ok2 && (c.inScope(o) || c.inScope(s)) && (changed(o, s) || needsCleanup(s)) {
				c.enqueue(s)
			}
		},
		DeleteFunc: func(o any) {
			if tomb, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = tomb.Obj
			}
			if svc, ok := o.(*v1.Service); ok && c.inScope(svc) {
				c.enqueue(svc)
			}
		},
	})
	lb.controller.Store(c)
	return c
}

// inScope: no class, or vip's class. Which of them vip serves is
// lbsvc.Wants; the others in scope are only cleaned up.
func (c *ServiceController) inScope(svc *v1.Service) bool {
	cls := svc.Spec.LoadBalancerClass
	return cls == nil || (c.lb.opts.Class.Name != "" && *cls == c.lb.opts.Class.Name)
}

// changed reports a change that may change the load balancer: the stock
// controller's needsUpdate looks at parts of the spec, the annotations, the
// UID; vip looks at the whole spec.
func changed(old, cur *v1.Service) bool {
	return old.UID != cur.UID || !reflect.DeepEqual(old.Spec, cur.Spec) ||
		!reflect.DeepEqual(old.Annotations, cur.Annotations) ||
		(old.DeletionTimestamp == nil) != (cur.DeletionTimestamp == nil)
}

func hasFinalizer(svc *v1.Service) bool {
	for _, f := range svc.Finalizers {
		if f == FinalizerLoadBalancerCleanup {
			return true
		}
	}
	return false
}

// needsCleanup: the finalizer is set and the Service is being deleted or
// no longer of type LoadBalancer.
func needsCleanup(svc *v1.Service) bool {
	return hasFinalizer(svc) && (svc.DeletionTimestamp != nil || svc.Spec.Type != v1.ServiceTypeLoadBalancer)
}

func (c *ServiceController) enqueue(svc *v1.Service) {
	if key, err := cache.MetaNamespaceKeyFunc(svc); err == nil {
		c.queue.Add(key)
	}
}

// Run processes Services with the given number of workers until ctx ends.
func (c *ServiceController) Run(ctx context.Context, workers int) {
	defer c.queue.ShutDown()
	logger := klog.FromContext(ctx)
	logger.Info("Starting vip service controller", "workers", workers)
	defer logger.Info("Shutting down vip service controller")
	// The provider's informers too (pools, Nodes, Leases): before they
	// synced every Service would fail once with a retry.
	if !cache.WaitForNamedCacheSyncWithContext(klog.NewContext(ctx, klog.LoggerWithValues(logger, "controller", "service")), c.synced, c.lb.hasSynced) {
		return
	}
	for i := 0; i < workers; i++ {
		go wait.UntilWithContext(ctx, c.worker, time.Second)
	}
	<-ctx.Done()
}

func (c *ServiceController) worker(ctx context.Context) {
	for c.next(ctx) {
	}
}

func (c *ServiceController) next(ctx context.Context) bool {
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
		klog.FromContext(ctx).V(2).Info("syncing Service failed; will retry", "service", key, "retryAfter", retry.RetryAfter(), "err", err)
		c.queue.Forget(key)
		c.queue.AddAfter(key, retry.RetryAfter())
	default:
		klog.FromContext(ctx).Info("syncing Service failed; will retry with backoff", "service", key, "err", err)
		c.queue.AddRateLimited(key)
	}
	return true
}

// event records an Event on svc, leaving the informational ones out unless
// all Events were asked for.
func (c *ServiceController) event(svc *v1.Service, typ, reason, msg string) {
	if !c.all && typ == v1.EventTypeNormal && quietServiceEvents[reason] {
		return
	}
	c.recorder.Event(svc, typ, reason, msg)
}

func (c *ServiceController) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	svc, err := c.lister.Services(ns).Get(name)
	if apierrors.IsNotFound(err) {
		// Gone without the finalizer (or after it was removed): release
		// whatever is still held.
		c.lb.unsupported.forget(key)
		c.lb.release(key)
		return nil
	}
	if err != nil {
		return err
	}
	if !c.inScope(svc) && svc.Spec.Type == v1.ServiceTypeLoadBalancer {
		return nil // another class (it changed since it was queued)
	}
	svc = svc.DeepCopy()
	if needsCleanup(svc) || (svc.Spec.Type != v1.ServiceTypeLoadBalancer && len(svc.Status.LoadBalancer.Ingress) > 0) {
		err = c.cleanup(ctx, svc, key)
	} else if svc.Spec.Type == v1.ServiceTypeLoadBalancer && svc.DeletionTimestamp == nil && lbsvc.Wants(svc, c.lb.opts.Class) {
		err = c.ensure(ctx, svc)
	}
	// Anything else (ignored, or unclassed while only the class is served)
	// is left as it is.
	if err != nil {
		c.recorder.Eventf(svc, v1.EventTypeWarning, ReasonSyncFailed, "Error syncing load balancer: %v", err)
	}
	return err
}

// ensure adds the finalizer, gets the addresses and writes them to status.
func (c *ServiceController) ensure(ctx context.Context, svc *v1.Service) error {
	klog.FromContext(ctx).V(2).Info("Ensuring load balancer", "service", klog.KObj(svc))
	c.event(svc, v1.EventTypeNormal, ReasonEnsuring, "Ensuring load balancer")
	if err := c.setFinalizer(ctx, svc, true); err != nil {
		return fmt.Errorf("failed to add load balancer cleanup finalizer: %w", err)
	}
	st, err := c.lb.EnsureLoadBalancer(ctx, "", svc, nil)
	if errors.Is(err, cloudprovider.ImplementedElsewhere) {
		return nil // no longer vip's (changed since it was read)
	}
	if err != nil {
		// No address can be given now; one quarantined since it was given
		// leaves status all the same.
		if st, dropped := c.lb.withoutQuarantined(svc); dropped {
			if werr := c.writeStatus(ctx, svc, st); werr != nil {
				return fmt.Errorf("failed to update load balancer status: %w", werr)
			}
		}
		// %w: a RetryError keeps its delay.
		return fmt.Errorf("failed to ensure load balancer: %w", err)
	}
	if st == nil {
		return fmt.Errorf("service status returned by EnsureLoadBalancer is nil")
	}
	c.event(svc, v1.EventTypeNormal, ReasonEnsured, "Ensured load balancer")
	if err := c.writeStatus(ctx, svc, st); err != nil {
		return fmt.Errorf("failed to update load balancer status: %w", err)
	}
	return nil
}

// cleanup releases the addresses, removes the finalizer and clears status,
// in the stock controller's order (once the finalizer is gone, an update
// no longer queues the Service again).
func (c *ServiceController) cleanup(ctx context.Context, svc *v1.Service, key string) error {
	if _, exists, err := c.lb.GetLoadBalancer(ctx, "", svc); err != nil {
		return fmt.Errorf("failed to check if load balancer exists before cleanup: %w", err)
	} else if exists {
		klog.FromContext(ctx).V(2).Info("Deleting existing load balancer", "service", key)
		c.event(svc, v1.EventTypeNormal, ReasonDeleting, "Deleting load balancer")
		if err := c.lb.EnsureLoadBalancerDeleted(ctx, "", svc); err != nil {
			return fmt.Errorf("failed to delete load balancer: %w", err)
		}
	}
	if err := c.setFinalizer(ctx, svc, false); err != nil {
		return fmt.Errorf("failed to remove load balancer cleanup finalizer: %w", err)
	}
	c.event(svc, v1.EventTypeNormal, ReasonDeleted, "Deleted load balancer")
	if err := c.writeStatus(ctx, svc, &v1.LoadBalancerStatus{}); err != nil {
		return fmt.Errorf("failed to update load balancer status: %w", err)
	}
	return nil
}

// setFinalizer adds or removes the finalizer with a strategic merge patch
// of the finalizer list alone (as the stock controller), so finalizers
// others add meanwhile are kept.
func (c *ServiceController) setFinalizer(ctx context.Context, svc *v1.Service, want bool) error {
	if hasFinalizer(svc) == want {
		return nil
	}
	var fins []string
	for _, f := range svc.Finalizers {
		if f != FinalizerLoadBalancerCleanup {
			fins = append(fins, f)
		}
	}
	if want {
		fins = append(fins, FinalizerLoadBalancerCleanup)
	}
	oldJSON, err := json.Marshal(v1.Service{ObjectMeta: metav1.ObjectMeta{Finalizers: svc.Finalizers}})
	if err != nil {
		return err
	}
	newJSON, err := json.Marshal(v1.Service{ObjectMeta: metav1.ObjectMeta{Finalizers: fins}})
	if err != nil {
		return err
	}
	patch, err := strategicpatch.CreateTwoWayMergePatch(oldJSON, newJSON, v1.Service{})
	if err != nil {
		return err
	}
	// Through the status subresource, as the stock controller: the RBAC of
	// kube-vip-cloud-provider installs allows patch there only.
	_, err = c.client.CoreV1().Services(svc.Namespace).Patch(ctx, svc.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("patching the finalizers of %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	svc.Finalizers = fins
	return nil
}
