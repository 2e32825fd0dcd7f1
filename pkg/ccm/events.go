package ccm

import (
	"context"

	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
)

// Normal Events of the stock service controller that say nothing for vip:
// "Ensuring load balancer" and "Ensured load balancer" on every sync (vip's
// own AddressAllocated carries the address instead), and "Updated load
// balancer with new hosts" for every Service whenever the node set changes
// (vip's addresses do not depend on nodes). With thousands of Services they
// are most of the controller's API writes.
var quietServiceEvents = map[string]bool{
	"EnsuringLoadBalancer": true,
	"EnsuredLoadBalancer":  true,
	"UpdatedLoadBalancer":  true,
}

// QuietServiceEvent reports whether an Event of the stock service
// controller is one that ServiceControllerClient leaves out.
func QuietServiceEvent(ev *v1.Event) bool {
	return ev.Type == v1.EventTypeNormal && quietServiceEvents[ev.Reason]
}

// ServiceControllerClient returns the client to hand the stock service
// controller: its API calls go through client, while its Events go through
// events, a client with its own rate limiter, so Events never delay status
// writes. Unless all is set, the Events that QuietServiceEvent names are
// dropped; warnings and every other Event are kept.
func ServiceControllerClient(client, events kubernetes.Interface, all bool) kubernetes.Interface {
	var drop func(*v1.Event) bool
	if !all {
		drop = QuietServiceEvent
	}
	return splitClient{Interface: client, core: splitCore{CoreV1Interface: client.CoreV1(), events: events.CoreV1(), drop: drop}}
}

type splitClient struct {
	kubernetes.Interface
	core typedcorev1.CoreV1Interface
}

func (c splitClient) CoreV1() typedcorev1.CoreV1Interface { return c.core }

type splitCore struct {
	typedcorev1.CoreV1Interface
	events typedcorev1.CoreV1Interface
	drop   func(*v1.Event) bool
}

func (c splitCore) Events(ns string) typedcorev1.EventInterface {
	return filteredEvents{EventInterface: c.events.Events(ns), drop: c.drop}
}

// filteredEvents drops Events on the paths the event broadcaster uses.
type filteredEvents struct {
	typedcorev1.EventInterface
	drop func(*v1.Event) bool
}

func (f filteredEvents) dropped(ev *v1.Event) bool { return f.drop != nil && f.drop(ev) }

func (f filteredEvents) CreateWithEventNamespace(ev *v1.Event) (*v1.Event, error) {
	if f.dropped(ev) {
		return ev, nil
	}
	return f.EventInterface.CreateWithEventNamespaceWithContext(context.Background(), ev)
}

func (f filteredEvents) CreateWithEventNamespaceWithContext(ctx context.Context, ev *v1.Event) (*v1.Event, error) {
	if f.dropped(ev) {
		return ev, nil
	}
	return f.EventInterface.CreateWithEventNamespaceWithContext(ctx, ev)
}

func (f filteredEvents) PatchWithEventNamespace(ev *v1.Event, data []byte) (*v1.Event, error) {
	if f.dropped(ev) {
		return ev, nil
	}
	return f.EventInterface.PatchWithEventNamespaceWithContext(context.Background(), ev, data)
}

func (f filteredEvents) PatchWithEventNamespaceWithContext(ctx context.Context, ev *v1.Event, data []byte) (*v1.Event, error) {
	if f.dropped(ev) {
		return ev, nil
	}
	return f.EventInterface.PatchWithEventNamespaceWithContext(ctx, ev, data)
}

func (f filteredEvents) UpdateWithEventNamespace(ev *v1.Event) (*v1.Event, error) {
	if f.dropped(ev) {
		return ev, nil
	}
	return f.EventInterface.UpdateWithEventNamespaceWithContext(context.Background(), ev)
}

func (f filteredEvents) UpdateWithEventNamespaceWithContext(ctx context.Context, ev *v1.Event) (*v1.Event, error) {
	if f.dropped(ev) {
		return ev, nil
	}
	return f.EventInterface.UpdateWithEventNamespaceWithContext(ctx, ev)
}
