package agent

import (
	"context"
	"net/netip"

	v1 "k8s.io/api/core/v1"

	"github.com/vip-lb/vip/pkg/ipam"
)

// Plug-ins are optional parts the core reconcile calls through the small
// interfaces below and knows nothing else about: internal/agentapp builds
// them when the configuration enables them (DHCP-obtained addresses in layer
// 2 mode: pkg/agent/dhcpsource; UPnP port forwarding with enableUPNP:
// pkg/agent/upnpforward) and passes them in Options. Both run in layer 2
// mode only, where one node serves each address.

// AddressSource obtains the address of Services that do not take one from a
// pool (DHCP). Such a Service is elected per Service, on its own Lease in
// the agent namespace, since its address is not known before the source
// obtains it; the owner asks the source for the address and announces it
// once the Service's status (written by vip-ccm) shows it.
type AddressSource interface {
	// String names the source in logs and Events ("DHCP").
	String() string
	// Claims reports whether the source obtains svc's address; pools is the
	// pools ConfigMap as parsed (nil before it is read).
	Claims(svc *v1.Service, pools *ipam.Config) bool
	// LeaseName is the election Lease of a claimed Service.
	LeaseName(svc *v1.Service) string
	// Acquire runs on the node that owns a claimed Service, on each of its
	// reconciles: it starts or keeps obtaining the address and says what to
	// announce.
	Acquire(ctx context.Context, req SourceRequest) (Supplied, error)
	// Release ends what Acquire started on this node for key; gone says the
	// Service no longer needs the address (it is given back), otherwise it
	// is kept for the Service's next owner.
	Release(key string, gone bool)
}

// SourceRequest is one Acquire call.
type SourceRequest struct {
	// Key is the Service key (<namespace>/<name>).
	Key     string
	Service *v1.Service
	// Interface is the interface the administrator allows for the Service
	// (checked by the agent); "" when none is configured.
	Interface string
	// Status are the announceable addresses of the Service's status.
	Status []netip.Addr
	// Namespace and Lease name the Service's election Lease.
	Namespace, Lease string
}

// Supplied is what an AddressSource gives the owner of a Service.
type Supplied struct {
	// Addr, when valid, is announced on Interface once the Service's status
	// shows it.
	Addr      netip.Addr
	Interface string
	// Withdraw, when Addr is not valid, says why this node withdraws what
	// it announced for the Service; "" leaves that as it is (the source
	// reported its problem itself).
	Withdraw string
}

// Forwarder is told which Services this node serves on which addresses, and
// when it stops (UPnP port mappings on the network's gateway).
type Forwarder interface {
	// Serve says this node serves svc (key) on addrs (sorted; may be empty
	// while they change). It is called on every reconcile that announces
	// the Service, since its ports or annotations may have changed.
	Serve(key string, svc *v1.Service, addrs []netip.Addr)
	// Unserve says this node stops serving key. It is called while the
	// addresses are still bound and returns once the forwarding is gone or
	// ctx ends.
	Unserve(ctx context.Context, key string)
}

// PoolsReader is implemented by plug-ins that read administrator settings
// from the pools ConfigMap (such as per-namespace consent); the agent hands
// them the data of each version it sees.
type PoolsReader interface {
	SetPools(data map[string]string)
}

// plugins lists the plug-ins configured.
func (a *Agent) plugins() []any {
	var out []any
	if a.o.Source != nil {
		out = append(out, a.o.Source)
	}
	if a.o.Forwarder != nil {
		out = append(out, a.o.Forwarder)
	}
	return out
}

// setPools hands the pools ConfigMap's data to the plug-ins that read it.
func (a *Agent) setPools(data map[string]string) {
	for _, p := range a.plugins() {
		if r, ok := p.(PoolsReader); ok {
			r.SetPools(data)
		}
	}
}

// forward tells the Forwarder what this node serves for key now.
func (a *Agent) forward(key string, svc *v1.Service) {
	if a.o.Forwarder == nil {
		return
	}
	a.o.Forwarder.Serve(key, svc, a.servedAddrs(key))
}

// unforward tells the Forwarder this node stops serving key.
func (a *Agent) unforward(ctx context.Context, key string) {
	if a.o.Forwarder == nil {
		return
	}
	a.o.Forwarder.Unserve(ctx, key)
}

// sourced reports whether svc's address comes from the AddressSource.
func (a *Agent) sourced(svc *v1.Service) bool {
	if a.o.Source == nil {
		return false
	}
	a.mu.Lock()
	pools := a.ifaces
	a.mu.Unlock()
	return a.o.Source.Claims(svc, pools)
}

// release ends what the AddressSource does here for key (see
// AddressSource.Release).
func (a *Agent) release(key string, gone bool) {
	if a.o.Source != nil {
		a.o.Source.Release(key, gone)
	}
}
