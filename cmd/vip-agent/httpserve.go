package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/go-logr/logr"
	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// metricsListenAddr is where the metrics and health server listens. An
// address without a host (kube-vip's ":2112") means this node's address:
// --node-address (the DaemonSet passes status.hostIP), else the address
// this host uses towards the API server, so the server is not reachable on
// every interface of the host. "0.0.0.0:2112" or "[::]:2112" still listen
// everywhere when asked for explicitly.
func metricsListenAddr(c config, apiHost string) (string, error) {
	host, port, err := net.SplitHostPort(c.metricsAddr)
	if err != nil {
		return "", fmt.Errorf("%w: --metrics-address (prometheus_server) %q: %v", errConfig, c.metricsAddr, err)
	}
	if host != "" {
		return c.metricsAddr, nil
	}
	node := c.nodeAddress
	if node == "" {
		node = localAddrTowards(apiHost)
	}
	a, err := netip.ParseAddr(node)
	if err != nil || a.IsLoopback() || a.IsUnspecified() {
		// No usable node address: listening on loopback would hide the
		// server from the peers that probe it.
		return c.metricsAddr, nil
	}
	return net.JoinHostPort(a.Unmap().String(), port), nil
}

// apiHostOf is the API server URL of the agent's credentials ("" when
// they cannot be read; the caller then listens everywhere).
func apiHostOf(c config) string {
	rc, err := restConfig(c)
	if err != nil {
		return ""
	}
	return rc.Host
}

// serveMetrics starts the metrics and health server on addr with handler;
// the returned function stops it.
func serveMetrics(addr string, h http.Handler) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%w: metrics address %s: %v", errConfig, addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return func() { _ = srv.Close() }, nil
}

// nodeAddresses is the set of every Node's status addresses, kept current
// by an informer: the election health endpoint answers only them, and peers'
// health URLs are probed only at them.
type nodeAddresses struct {
	mu       sync.RWMutex
	byNode   map[string][]netip.Addr
	informer cache.SharedIndexInformer
	factory  informers.SharedInformerFactory
}

func newNodeAddresses(client kubernetes.Interface) *nodeAddresses {
	f := informers.NewSharedInformerFactory(client, 0)
	n := &nodeAddresses{byNode: map[string][]netip.Addr{}, factory: f, informer: f.Core().V1().Nodes().Informer()}
	set := func(obj any) {
		if node, ok := obj.(*v1.Node); ok {
			n.mu.Lock()
			n.byNode[node.Name] = addressesOf(node)
			n.mu.Unlock()
		}
	}
	_, _ = n.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: set, UpdateFunc: func(_, o any) { set(o) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if node, ok := obj.(*v1.Node); ok {
				n.mu.Lock()
				delete(n.byNode, node.Name)
				n.mu.Unlock()
			}
		},
	})
	return n
}

// addressesOf returns a Node's IP addresses from its status.
func addressesOf(node *v1.Node) []netip.Addr {
	var out []netip.Addr
	for _, a := range node.Status.Addresses {
		if a.Type != v1.NodeInternalIP && a.Type != v1.NodeExternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil {
			out = append(out, ip.Unmap())
		}
	}
	return out
}

// start runs the informer and waits for its first list.
func (n *nodeAddresses) start(ctx context.Context) error {
	n.factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), n.informer.HasSynced) {
		return fmt.Errorf("waiting for the Node list: %w", ctx.Err())
	}
	return nil
}

// Allowed reports whether a is an address of some Node (or loopback, for
// a check from the host itself).
func (n *nodeAddresses) Allowed(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	if a.IsLoopback() {
		return true
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	for _, addrs := range n.byNode {
		for _, x := range addrs {
			if x == a {
				return true
			}
		}
	}
	return false
}

// fromNodes serves h only to clients whose address is allowed; others get
// 403 and a debug log line.
func fromNodes(allowed func(netip.Addr) bool, h http.Handler, log logr.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ap, err := netip.ParseAddrPort(r.RemoteAddr)
		if err != nil || !allowed(ap.Addr()) {
			log.V(1).Info("refused an election health request from an address that is no node's", "remote", r.RemoteAddr)
			http.Error(w, "forbidden: not a node address", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}
