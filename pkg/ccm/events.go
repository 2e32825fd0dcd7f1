package ccm

import (
	"context"

	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
)

// Normal Events of the service controller that say nothing for vip:
// "Ensuring load balancer" and "Ensured load balancer" on every sync (vip's
// own AddressAllocated carries the address instead). With thousands of
// Services they would be most of the controller's API writes, so they are
// recorded only when asked for (vip-ccm --all-service-events).
// ("UpdatedLoadBalancer", which the stock controller recorded on node-set
// changes, is not recorded at all: vip's addresses do not depend on nodes.)
var quietServiceEvents = map[string]bool{
	ReasonEnsuring: true,
	ReasonEnsured:  true,
}

// QuietServiceEvent reports whether an Event of the service controller is
// one it leaves out unless all Events are asked for.
func QuietServiceEvent(ev *v1.Event) bool {
	return ev.Type == v1.EventTypeNormal && quietServiceEvents[ev.Reason]
}

// NewServiceEventRecorder returns the recorder for the service controller's
// Events, recorded as the stock controller's were (component
// "service-controller") through events, a client with its own rate limiter
// so Events never delay status writes. It records until ctx ends.
func NewServiceEventRecorder(ctx context.Context, events kubernetes.Interface) record.EventRecorder {
	b := record.NewBroadcaster(record.WithContext(ctx))
	b.StartStructuredLogging(klog.Level(2))
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: events.CoreV1().Events("")})
	go func() {
		<-ctx.Done()
		b.Shutdown()
	}()
	return b.NewRecorder(scheme.Scheme, v1.EventSource{Component: "service-controller"})
}
