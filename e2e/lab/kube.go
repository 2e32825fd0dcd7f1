package lab

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"

	"github.com/vip-lb/vip/pkg/lbsvc"
)

// ServiceOption changes a Service before it is created.
type ServiceOption func(*v1.Service)

// Local sets externalTrafficPolicy: Local.
func Local() ServiceOption {
	return func(s *v1.Service) { s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal }
}

// IPv6Only makes a single-stack IPv6 Service.
func IPv6Only() ServiceOption {
	return func(s *v1.Service) {
		p := v1.IPFamilyPolicySingleStack
		s.Spec.IPFamilyPolicy = &p
		s.Spec.IPFamilies = []v1.IPFamily{v1.IPv6Protocol}
	}
}

// Annotate sets an annotation.
func Annotate(key, value string) ServiceOption {
	return func(s *v1.Service) {
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations[key] = value
	}
}

// Port makes the Service listen on port (to the responders' port 80), so
// that Services sharing an address do not clash.
func Port(port int32) ServiceOption {
	return func(s *v1.Service) { s.Spec.Ports[0].Port = port }
}

// CreateService creates a LoadBalancer Service for the responders (TCP
// port 80, selector app=responder).
func (l *Lab) CreateService(ctx context.Context, ns, name string, opts ...ServiceOption) (*v1.Service, error) {
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1.ServiceSpec{
			Type:     v1.ServiceTypeLoadBalancer,
			Selector: map[string]string{"app": "responder"},
			Ports: []v1.ServicePort{{Name: "http", Protocol: v1.ProtocolTCP, Port: ServicePort,
				TargetPort: intstr.FromInt32(ServicePort)}},
		},
	}
	for _, o := range opts {
		o(svc)
	}
	if ns == ScaleNamespace {
		// The scale namespace measures announcing many Services; the
		// endpoint rule is not part of it (and would double the writes).
		Annotate(AnnotationAllowWithoutEndpoints, "true")(svc)
	}
	out, err := l.Admin.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("creating Service %s/%s: %w", ns, name, err)
	}
	// As the EndpointSlice controller would for the responders running on
	// every node. Local Services get theirs from the test (SetEndpoints).
	if ns != ScaleNamespace && svc.Spec.ExternalTrafficPolicy != v1.ServiceExternalTrafficPolicyLocal {
		_, err := l.Admin.DiscoveryV1().EndpointSlices(ns).Get(ctx, name+"-lab", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			err = l.SetEndpoints(ctx, ns, name, l.nodeNames()...)
		}
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// AnnotationAllowWithoutEndpoints keeps a Service announced while it has no
// ready endpoint (kube-vip's annotation).
const AnnotationAllowWithoutEndpoints = "kube-vip.io/allow-reconcile-without-endpoints"

// nodeNames lists the lab's node names.
func (l *Lab) nodeNames() []string {
	out := make([]string, 0, len(l.Nodes))
	for _, n := range l.Nodes {
		out = append(out, n.Name)
	}
	return out
}

// DeleteService deletes a Service (missing is fine).
func (l *Lab) DeleteService(ctx context.Context, ns, name string) error {
	err := l.Admin.CoreV1().Services(ns).Delete(ctx, name, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// ServiceGone waits until the Service no longer exists (its finalizer
// removed by vip-ccm).
func (l *Lab) ServiceGone(ctx context.Context, ns, name string) error {
	return poll(ctx, 50*time.Millisecond, func() (bool, error) {
		_, err := l.Admin.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	})
}

// Ingress returns the addresses in the Service's status.
func Ingress(svc *v1.Service) []netip.Addr {
	var out []netip.Addr
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if a, err := netip.ParseAddr(in.IP); err == nil {
			out = append(out, a)
		}
	}
	return out
}

// WaitAddress waits until the Service has an address in its status and
// returns the addresses.
func (l *Lab) WaitAddress(ctx context.Context, ns, name string) ([]netip.Addr, error) {
	var addrs []netip.Addr
	err := poll(ctx, 50*time.Millisecond, func() (bool, error) {
		svc, err := l.Admin.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		addrs = Ingress(svc)
		if len(addrs) > 0 {
			l.lastAddr.Store(ns+"/"+name, addrs[0])
		}
		return len(addrs) > 0, nil
	})
	if err != nil {
		return nil, fmt.Errorf("service %s/%s got no address: %w", ns, name, err)
	}
	return addrs, nil
}

// AgentNamespace holds every vip Lease (the agents' namespace).
const AgentNamespace = "kube-system"

// LeaseHolder returns the holder of the Lease that decides who announces
// the Service ("" and false when the Lease does not exist): the Lease of its
// address (vip-addr-<addr>), or its own Lease when it obtains its address by
// DHCP (vip-dhcp-<ns>-<name>). A deleted Service is looked up by the address
// it last had.
func (l *Lab) LeaseHolder(ctx context.Context, ns, svc string) (string, bool, error) {
	leases := l.Admin.CoordinationV1().Leases(AgentNamespace)
	lease, err := leases.Get(ctx, lbsvc.DHCPLeaseName(ns, svc), metav1.GetOptions{})
	if err == nil {
		return holder(lease), true, nil
	}
	if !apierrors.IsNotFound(err) {
		return "", false, err
	}
	addr, ok, err := l.serviceAddr(ctx, ns, svc)
	if err != nil || !ok {
		return "", false, err
	}
	return l.AddressHolder(ctx, addr)
}

// AddressHolder returns the holder of an address's Lease.
func (l *Lab) AddressHolder(ctx context.Context, addr netip.Addr) (string, bool, error) {
	lease, err := l.Admin.CoordinationV1().Leases(AgentNamespace).Get(ctx, lbsvc.AddressLeaseName(addr), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return holder(lease), true, nil
}

// serviceAddr is the first address of a Service's status, or the one it
// last had when it is gone.
func (l *Lab) serviceAddr(ctx context.Context, ns, svc string) (netip.Addr, bool, error) {
	key := ns + "/" + svc
	s, err := l.Admin.CoreV1().Services(ns).Get(ctx, svc, metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return netip.Addr{}, false, err
	}
	if err == nil {
		if addrs := Ingress(s); len(addrs) > 0 {
			l.lastAddr.Store(key, addrs[0])
			return addrs[0], true, nil
		}
	}
	if a, ok := l.lastAddr.Load(key); ok {
		return a.(netip.Addr), true, nil
	}
	return netip.Addr{}, false, nil
}

func holder(l *coordv1.Lease) string {
	if l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// Holders returns, by Service name, the holder of the address Lease of
// every Service in ns that has an address.
func (l *Lab) Holders(ctx context.Context, ns string) (map[string]string, error) {
	svcs, err := l.Admin.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	list, err := l.Admin.CoordinationV1().Leases(AgentNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	byName := map[string]string{}
	for i := range list.Items {
		byName[list.Items[i].Name] = holder(&list.Items[i])
	}
	out := map[string]string{}
	for i := range svcs.Items {
		s := &svcs.Items[i]
		if h, ok := byName[lbsvc.DHCPLeaseName(ns, s.Name)]; ok {
			out[s.Name] = h
			continue
		}
		if addrs := Ingress(s); len(addrs) > 0 {
			l.lastAddr.Store(ns+"/"+s.Name, addrs[0])
			if h, ok := byName[lbsvc.AddressLeaseName(addrs[0])]; ok {
				out[s.Name] = h
			}
		}
	}
	return out, nil
}

// WaitHolder waits until the Service's Lease holder satisfies ok and
// returns it.
func (l *Lab) WaitHolder(ctx context.Context, ns, svc string, ok func(string) bool) (string, error) {
	var h string
	err := poll(ctx, 20*time.Millisecond, func() (bool, error) {
		var err error
		h, _, err = l.LeaseHolder(ctx, ns, svc)
		return err == nil && ok(h), nil
	})
	if err != nil {
		return h, fmt.Errorf("lease of Service %s/%s: holder %q: %w", ns, svc, h, err)
	}
	return h, nil
}

// SetEndpoints creates or replaces the EndpointSlice of a Service with one
// ready endpoint per node in nodes (the node's IPv4 address, port 80).
func (l *Lab) SetEndpoints(ctx context.Context, ns, svc string, nodes ...string) error {
	return l.SetEndpointsReady(ctx, ns, svc, true, nodes...)
}

// SetEndpointsReady is SetEndpoints with every endpoint's ready condition
// set to ready (false: the responders are there but not ready).
func (l *Lab) SetEndpointsReady(ctx context.Context, ns, svc string, ready bool, nodes ...string) error {
	name := svc + "-lab"
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{
			discoveryv1.LabelServiceName: svc, discoveryv1.LabelManagedBy: "vip-lab"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{{Name: ptr("http"), Protocol: ptr(v1.ProtocolTCP),
			Port: ptr(int32(ServicePort))}},
	}
	for _, n := range nodes {
		node := l.Node(n)
		if node == nil {
			return fmt.Errorf("no node %q", n)
		}
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{node.IP4.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(ready), Serving: ptr(ready), Terminating: ptr(false)},
			NodeName:   ptr(n),
		})
	}
	cl := l.Admin.DiscoveryV1().EndpointSlices(ns)
	cur, err := cl.Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = cl.Create(ctx, es, metav1.CreateOptions{})
	case err == nil:
		es.ResourceVersion = cur.ResourceVersion
		_, err = cl.Update(ctx, es, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("EndpointSlice %s/%s: %w", ns, name, err)
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// poll calls f every interval until it returns true or an error, or ctx ends.
func poll(ctx context.Context, interval time.Duration, f func() (bool, error)) error {
	for {
		done, err := f()
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

// APIServerMetrics sums the API server's metric samples of family name
// whose labels satisfy match (nil = all).
func (l *Lab) APIServerMetrics(ctx context.Context, name string, match func(labels map[string]string) bool) (float64, error) {
	hc, err := rest.HTTPClientFor(l.Env.AdminConfig())
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, l.Env.Server()+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("API server /metrics: %s", resp.Status)
	}
	return sumMetric(resp.Body, name, match)
}

// sumMetric sums the samples of one family in Prometheus text format.
func sumMetric(r io.Reader, name string, match func(map[string]string) bool) (float64, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 4*1024*1024)
	var sum float64
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) || len(line) == len(name) {
			continue
		}
		rest := line[len(name):]
		labels := map[string]string{}
		switch rest[0] {
		case '{':
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				continue
			}
			labels = parseLabels(rest[1:end])
			rest = rest[end+1:]
		case ' ':
		default:
			continue // another family with this prefix
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		if match == nil || match(labels) {
			sum += v
		}
	}
	return sum, sc.Err()
}

// parseLabels parses `a="x",b="y"` (values without escaped quotes).
func parseLabels(s string) map[string]string {
	out := map[string]string{}
	for s != "" {
		eq := strings.IndexByte(s, '=')
		if eq < 0 || eq+1 >= len(s) || s[eq+1] != '"' {
			break
		}
		key := strings.TrimLeft(s[:eq], ", ")
		rest := s[eq+2:]
		end := strings.IndexByte(rest, '"')
		for end > 0 && rest[end-1] == '\\' {
			next := strings.IndexByte(rest[end+1:], '"')
			if next < 0 {
				end = -1
				break
			}
			end += next + 1
		}
		if end < 0 {
			break
		}
		out[key] = rest[:end]
		s = rest[end+1:]
	}
	return out
}

// WaitLeaseGone waits until the Lease deciding who announces the Service no
// longer exists (for an address Lease: no Service has the address).
func (l *Lab) WaitLeaseGone(ctx context.Context, ns, svc string) error {
	return poll(ctx, 50*time.Millisecond, func() (bool, error) {
		_, exists, err := l.LeaseHolder(ctx, ns, svc)
		return err == nil && !exists, nil
	})
}

// Poll calls f every interval until it returns true or an error, or ctx
// ends.
func Poll(ctx context.Context, interval time.Duration, f func() (bool, error)) error {
	return poll(ctx, interval, f)
}
