//go:build e2e

package bgp

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func ptr[T any](v T) *T { return &v }

type svcOpt func(*v1.Service)

func local() svcOpt {
	return func(s *v1.Service) { s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal }
}

func ipv6Only() svcOpt {
	return func(s *v1.Service) {
		s.Spec.IPFamilyPolicy = ptr(v1.IPFamilyPolicySingleStack)
		s.Spec.IPFamilies = []v1.IPFamily{v1.IPv6Protocol}
	}
}

func newService(ns, name string, opts ...svcOpt) *v1.Service {
	s := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1.ServiceSpec{
			Type: v1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "responder"},
			Ports: []v1.ServicePort{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(80)}},
		},
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

func (l *bgpLab) createService(t testing.TB, ns, name string, opts ...svcOpt) {
	t.Helper()
	svc := newService(ns, name, opts...)
	if _, err := l.admin.CoreV1().Services(ns).Create(context.Background(), svc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating Service %s/%s: %v", ns, name, err)
	}
	// As the EndpointSlice controller would for the responders on every
	// node; Local Services get theirs from the test (setEndpoints).
	if svc.Spec.ExternalTrafficPolicy != v1.ServiceExternalTrafficPolicyLocal {
		_, err := l.admin.DiscoveryV1().EndpointSlices(ns).Get(context.Background(), name+"-lab", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			var all []string
			for _, n := range l.nodes {
				all = append(all, n.name)
			}
			l.setEndpoints(t, ns, name, all...)
		}
	}
}

// withoutEndpoints keeps a Service announced while it has no ready endpoint
// (kube-vip's opt-out annotation).
func withoutEndpoints() svcOpt {
	return func(s *v1.Service) {
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations["kube-vip.io/allow-reconcile-without-endpoints"] = "true"
	}
}

func (l *bgpLab) deleteService(t testing.TB, ns, name string) {
	t.Helper()
	err := l.admin.CoreV1().Services(ns).Delete(context.Background(), name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("deleting Service %s/%s: %v", ns, name, err)
	}
}

func ingress(s *v1.Service) []netip.Addr {
	var out []netip.Addr
	for _, in := range s.Status.LoadBalancer.Ingress {
		if a, err := netip.ParseAddr(in.IP); err == nil {
			out = append(out, a)
		}
	}
	return out
}

// waitAddress waits for the Service's first address in status.
func (l *bgpLab) waitAddress(t testing.TB, ns, name string) netip.Addr {
	t.Helper()
	var vip netip.Addr
	l.eventually(t, fmt.Sprintf("an address for %s/%s", ns, name), 30*time.Second, func() bool {
		s, err := l.admin.CoreV1().Services(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false
		}
		if a := ingress(s); len(a) > 0 {
			vip = a[0]
			return true
		}
		return false
	})
	return vip
}

// eventually polls cond every 10 ms until it holds, and returns how long
// that took.
func (l *bgpLab) eventually(t testing.TB, what string, timeout time.Duration, cond func() bool) time.Duration {
	t.Helper()
	t0 := time.Now()
	for !cond() {
		if time.Since(t0) > timeout {
			t.Fatalf("timed out after %v waiting for %s\n%s", timeout, what, l.logs(25))
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(t0)
}

// nextHops returns the next hops of the router's FIB route for vip (host
// route only), sorted; nil when there is none.
func (l *bgpLab) nextHops(vip netip.Addr) []netip.Addr {
	fam := netlink.FAMILY_V4
	if vip.Is6() {
		fam = netlink.FAMILY_V6
	}
	dst := netip.PrefixFrom(vip, vip.BitLen())
	routes, err := l.routerNL.RouteListFiltered(fam, &netlink.Route{Dst: prefixNet(dst), Table: 254}, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		if ones, bits := r.Dst.Mask.Size(); ones != bits {
			continue
		}
		if r.Gw != nil {
			a, _ := netip.AddrFromSlice(r.Gw)
			out = append(out, a.Unmap())
		}
		for _, nh := range r.MultiPath {
			a, _ := netip.AddrFromSlice(nh.Gw)
			out = append(out, a.Unmap())
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// waitNextHops waits until the router's route for vip goes exactly through
// want (none: no route), and returns how long that took.
func (l *bgpLab) waitNextHops(t testing.TB, vip netip.Addr, timeout time.Duration, want ...netip.Addr) time.Duration {
	t.Helper()
	slices.SortFunc(want, netip.Addr.Compare)
	return l.eventually(t, fmt.Sprintf("route %s via %v at the router (has %v)", vip, want, l.nextHops(vip)), timeout, func() bool {
		return slices.Equal(l.nextHops(vip), want)
	})
}

func (l *bgpLab) nodeIPs(v6 bool, names ...string) []netip.Addr {
	var out []netip.Addr
	for _, n := range l.nodes {
		if len(names) > 0 && !slices.Contains(names, n.name) {
			continue
		}
		if v6 {
			out = append(out, n.ip6)
		} else {
			out = append(out, n.ip4)
		}
	}
	return out
}

func (l *bgpLab) node(name string) *labNode {
	for _, n := range l.nodes {
		if n.name == name {
			return n
		}
	}
	panic("no node " + name)
}

// get fetches http://vip/ from the client behind the router.
func (l *bgpLab) get(vip netip.Addr, timeout time.Duration) (string, error) {
	c := &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: dialIn(l.client), DisableKeepAlives: true}}
	resp, err := c.Get("http://" + netip.AddrPortFrom(vip, 80).String() + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b)), err
}

// lo returns the addresses on a node's lo, other than loopback.
func (l *bgpLab) lo(name string) []netip.Addr {
	h, err := netns.GetFromName(l.node(name).ns)
	if err != nil {
		return nil
	}
	defer h.Close()
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		return nil
	}
	defer nl.Close()
	link, err := nl.LinkByName("lo")
	if err != nil {
		return nil
	}
	addrs, _ := nl.AddrList(link, netlink.FAMILY_ALL)
	var out []netip.Addr
	for _, a := range addrs {
		ip, _ := netip.AddrFromSlice(a.IP)
		if ip = ip.Unmap(); !ip.IsLoopback() {
			out = append(out, ip)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// setEndpoints makes the Service's EndpointSlice list one ready endpoint on
// each of nodes.
func (l *bgpLab) setEndpoints(t testing.TB, ns, svc string, nodes ...string) {
	t.Helper()
	l.setEndpointsReady(t, ns, svc, true, nodes...)
}

// setEndpointsReady is setEndpoints with the endpoints' ready condition.
func (l *bgpLab) setEndpointsReady(t testing.TB, ns, svc string, ready bool, nodes ...string) {
	t.Helper()
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: svc + "-lab", Namespace: ns, Labels: map[string]string{
			discoveryv1.LabelServiceName: svc, discoveryv1.LabelManagedBy: "vip-bgp-lab"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Protocol: ptr(v1.ProtocolTCP), Port: ptr(int32(80))}},
	}
	for _, n := range nodes {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			Addresses: []string{l.node(n).ip4.String()}, NodeName: ptr(n),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(ready)},
		})
	}
	cl := l.admin.DiscoveryV1().EndpointSlices(ns)
	ctx := context.Background()
	cur, err := cl.Get(ctx, es.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = cl.Create(ctx, es, metav1.CreateOptions{})
	case err == nil:
		es.ResourceVersion = cur.ResourceVersion
		_, err = cl.Update(ctx, es, metav1.UpdateOptions{})
	}
	if err != nil {
		t.Fatalf("EndpointSlice %s/%s: %v", ns, es.Name, err)
	}
}

// metric reads a metric of a node's agent: the sum over the series whose
// labels contain match (a substring such as `peer="10.1.0.254"`).
func (l *bgpLab) metric(name, metric, match string) (float64, error) {
	n := l.node(name)
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: dialIn(n.ns), DisableKeepAlives: true}}
	resp, err := c.Get("http://" + netip.AddrPortFrom(n.ip4, metricPort).String() + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var sum float64
	found := false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, metric) || (len(line) > len(metric) && line[len(metric)] != ' ' && line[len(metric)] != '{') {
			continue
		}
		if match != "" && !strings.Contains(line, match) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			sum += v
			found = true
		}
	}
	if !found {
		return 0, fmt.Errorf("metric %s{%s} not found on %s", metric, match, name)
	}
	return sum, nil
}

// restartAgent starts a stopped agent again and waits for its sessions.
func (l *bgpLab) restartAgent(t testing.TB, name string) {
	t.Helper()
	if err := l.node(name).agent.start(); err != nil {
		t.Fatal(err)
	}
	if err := l.waitSessions(context.Background(), 30*time.Second); err != nil {
		t.Fatal(err)
	}
}

// stopAgent signals an agent by PID and waits until it exits.
func (l *bgpLab) stopAgent(name string, sig syscall.Signal) {
	l.node(name).agent.stop(sig, 15*time.Second)
}

// rss returns a process's resident set size in bytes.
func rss(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

// ensureAllUp restarts whatever a test stopped, so the next test starts
// from a full lab.
func (l *bgpLab) ensureAllUp(t testing.TB) {
	t.Helper()
	for _, n := range l.nodes {
		_ = ipc("-n", l.sw, "link", "set", n.port, "up")
		if !n.agent.running() {
			if err := n.agent.start(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !l.bird.running() {
		if err := l.startBIRD(); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.waitSessions(context.Background(), 40*time.Second); err != nil {
		t.Fatal(err)
	}
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
