package agentapp

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/vip-lb/vip/internal/listwatch"
	"github.com/vip-lb/vip/pkg/agentconfig"
)

// mux is the agent's one HTTP handler: /metrics, /healthz, /readyz (see the
// package comment) and, when svc has one, the election health endpoint.
func (a *app) mux(svc *services) http.Handler {
	m := http.NewServeMux()
	m.Handle("/metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{}))
	m.HandleFunc("/healthz", ok)
	m.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if svc != nil && !svc.ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		ok(w, r)
	})
	if svc != nil && svc.election != nil {
		m.Handle("/vip/election", svc.election)
	}
	return m
}

func ok(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }

// serveHTTP starts a server on addr with handler; the returned function
// stops it.
func serveHTTP(addr string, h http.Handler) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%w: listening on %s: %w", agentconfig.ErrConfig, addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return func() { _ = srv.Close() }, nil
}

// serveHealthPort answers /healthz on kube-vip's health_check_port, so a
// liveness probe written for kube-vip keeps passing (0: off). It listens
// on this node's address, as the metrics server does.
func serveHealthPort(c agentconfig.Config, apiHost string) (stop func(), err error) {
	if c.HealthPort == 0 {
		return func() {}, nil
	}
	hc := c
	hc.MetricsAddress = net.JoinHostPort("", strconv.Itoa(c.HealthPort))
	addr, err := metricsListenAddr(hc, apiHost)
	if err != nil {
		return nil, err
	}
	m := http.NewServeMux()
	m.HandleFunc("/healthz", ok)
	stop, err = serveHTTP(addr, m)
	if err != nil {
		return nil, fmt.Errorf("health_check_port %d: %w", c.HealthPort, err)
	}
	return stop, nil
}

// metricsListenAddr is where the metrics and health server listens. An
// address without a host (kube-vip's ":2112") means this node's address:
// --node-address (the DaemonSet passes status.hostIP), else the address
// this host uses towards the API server, so the server is not reachable on
// every interface of the host. "0.0.0.0:2112" or "[::]:2112" still listen
// everywhere when asked for explicitly.
func metricsListenAddr(c agentconfig.Config, apiHost string) (string, error) {
	host, port, err := net.SplitHostPort(c.MetricsAddress)
	if err != nil {
		return "", fmt.Errorf("%w: --metrics-address (prometheus_server) %q: %w", agentconfig.ErrConfig, c.MetricsAddress, err)
	}
	if host != "" {
		return c.MetricsAddress, nil
	}
	node := c.NodeAddress
	if node == "" {
		node = localAddrTowards(apiHost)
	}
	a, err := netip.ParseAddr(node)
	if err != nil || a.IsLoopback() || a.IsUnspecified() {
		// No usable node address: listening on loopback would hide the
		// server from the peers that probe it.
		return c.MetricsAddress, nil
	}
	return net.JoinHostPort(a.Unmap().String(), port), nil
}

// healthURL is where peers reach this agent's election health handler
// served at listen.
func healthURL(c agentconfig.Config, listen, apiHost string) string {
	if listen == "" {
		return ""
	}
	bound, port, err := net.SplitHostPort(listen)
	if err != nil {
		return ""
	}
	host := c.HealthAdvertise
	if a, err := netip.ParseAddr(bound); host == "" && err == nil && !a.IsUnspecified() {
		host = bound
	}
	if host == "" {
		host = localAddrTowards(apiHost)
	}
	if host == "" {
		return ""
	}
	return "http://" + net.JoinHostPort(host, port) + "/vip/election"
}

// localAddrTowards returns this host's source address towards the API
// server (a UDP "connect" sends nothing).
func localAddrTowards(apiHost string) string {
	u, err := url.Parse(apiHost)
	if err != nil || u.Host == "" {
		return ""
	}
	hostport := u.Host
	if u.Port() == "" {
		hostport = net.JoinHostPort(u.Hostname(), "443")
	}
	conn, err := net.Dial("udp", hostport)
	if err != nil {
		return ""
	}
	defer conn.Close()
	if ua, ok := conn.LocalAddr().(*net.UDPAddr); ok {
		return ua.IP.String()
	}
	return ""
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
	f := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTransform(listwatch.Slim))
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
