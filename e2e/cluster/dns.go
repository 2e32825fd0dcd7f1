package cluster

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"

	"golang.org/x/net/dns/dnsmessage"
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// The lab has no CoreDNS (not in the pinned module set). ServeDNS is a
// minimal stand-in for the names upstream's tests resolve from pods:
// <service>.<namespace>.svc.cluster.local → the Service's ClusterIP (the
// pods' search path turns a bare Service name into that). Everything else is
// NXDOMAIN. It runs in the control-plane namespace behind the Service
// kube-system/kube-dns (10.96.0.10, the kubelets' clusterDNS).
const (
	dnsServiceIP = "10.96.0.10"
	dnsSuffix    = ".svc.cluster.local."
)

// ServeDNS answers DNS over UDP on listen until ctx ends.
func ServeDNS(ctx context.Context, cs kubernetes.Interface, listen string) error {
	pc, err := net.ListenPacket("udp", listen)
	if err != nil {
		return err
	}
	go func() { <-ctx.Done(); pc.Close() }()
	buf := make([]byte, 1500)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		resp, err := answerDNS(ctx, cs, buf[:n])
		if err != nil {
			continue
		}
		_, _ = pc.WriteTo(resp, addr)
	}
}

// answerDNS builds the reply to one query.
func answerDNS(ctx context.Context, cs kubernetes.Interface, q []byte) ([]byte, error) {
	var p dnsmessage.Parser
	h, err := p.Start(q)
	if err != nil {
		return nil, err
	}
	question, err := p.Question()
	if err != nil {
		return nil, err
	}
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired}
	ip, ok := lookupService(ctx, cs, question.Name.String(), question.Type)
	if !ok {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(question); err != nil {
		return nil, err
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	if ok && ip.IsValid() {
		rr := dnsmessage.ResourceHeader{Name: question.Name, Class: dnsmessage.ClassINET, TTL: 5}
		if err := b.AResource(rr, dnsmessage.AResource{A: ip.As4()}); err != nil {
			return nil, err
		}
	}
	return b.Finish()
}

// lookupService resolves <svc>.<ns>.svc.cluster.local; ok with an invalid
// address means "the name exists, no record of that type".
func lookupService(ctx context.Context, cs kubernetes.Interface, name string, typ dnsmessage.Type) (netip.Addr, bool) {
	rest, found := strings.CutSuffix(strings.ToLower(name), dnsSuffix)
	if !found {
		return netip.Addr{}, false
	}
	svc, ns, found := strings.Cut(rest, ".")
	if !found || strings.Contains(ns, ".") {
		return netip.Addr{}, false
	}
	s, err := cs.CoreV1().Services(ns).Get(ctx, svc, metav1.GetOptions{})
	if err != nil {
		return netip.Addr{}, false
	}
	ip, err := netip.ParseAddr(s.Spec.ClusterIP)
	if err != nil || !ip.Is4() || typ != dnsmessage.TypeA {
		return netip.Addr{}, true
	}
	return ip, true
}

// StartDNS starts `self dns` in the control-plane namespace and publishes
// it as kube-system/kube-dns (10.96.0.10, selectorless, an EndpointSlice
// to the control-plane address).
func (c *Cluster) StartDNS(ctx context.Context, self string) error {
	p, err := startProc("dns", CPNS, filepath.Join(c.st.Dir, "control", "dns.log"), self, "dns",
		"--kubeconfig", c.LabKubeconfig(), "--listen", APIServerIP+":53")
	if err := c.addControl(p, err); err != nil {
		return err
	}
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: "kube-system"},
		Spec: v1.ServiceSpec{ClusterIP: dnsServiceIP, Ports: []v1.ServicePort{
			{Name: "dns", Port: 53, Protocol: v1.ProtocolUDP},
		}},
	}
	if _, err := c.Admin.CoreV1().Services("kube-system").Create(ctx, svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("kube-dns Service: %w", err)
	}
	port, proto := int32(53), v1.ProtocolUDP
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns-lab", Namespace: "kube-system",
			Labels: map[string]string{discoveryv1.LabelServiceName: "kube-dns", discoveryv1.LabelManagedBy: "vip-cluster-lab"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{APIServerIP}}},
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("dns"), Port: &port, Protocol: &proto}},
	}
	if _, err := c.Admin.DiscoveryV1().EndpointSlices("kube-system").Create(ctx, es, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("kube-dns EndpointSlice: %w", err)
	}
	return nil
}
