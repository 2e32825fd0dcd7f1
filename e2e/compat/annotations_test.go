//go:build e2e

package compat

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vip-lb/vip/e2e/lab"
)

// waitWarning waits for a Warning Event with reason on Service ns/name and
// returns its message.
func waitWarning(ctx context.Context, l *lab.Lab, ns, name, reason string) (string, error) {
	var msg string
	err := lab.Poll(ctx, 200*time.Millisecond, func() (bool, error) {
		evs, err := l.Admin.CoreV1().Events(ns).List(ctx, metav1.ListOptions{
			FieldSelector: "involvedObject.kind=Service,involvedObject.name=" + name})
		if err != nil {
			return false, nil
		}
		for _, e := range evs.Items {
			if e.Type == v1.EventTypeWarning && e.Reason == reason {
				msg = e.Message
				return true, nil
			}
		}
		return false, nil
	})
	return msg, err
}

// TestLeaseNameAnnotation: kube-vip's kube-vip.io/leaseName in ns/name form
// (a per-Service Lease in another namespace) is answered with a Warning
// UnsupportedAnnotation naming it (vip elects per address), and the
// Service is announced as any other: its address answers from the client.
func TestLeaseNameAnnotation(t *testing.T) {
	ctx, l := newLab(t)
	if _, err := l.CreateService(ctx, "default", "web", lab.Annotate("kube-vip.io/leaseName", "team/web")); err != nil {
		t.Fatal(err)
	}
	msg, err := waitWarning(ctx, l, "default", "web", "UnsupportedAnnotation")
	if err != nil {
		t.Fatalf("no UnsupportedAnnotation Warning: %v", err)
	}
	if !strings.Contains(msg, "kube-vip.io/leaseName") || !strings.Contains(msg, "vip-addr-") {
		t.Fatalf("the Warning does not name leaseName and the per-address Lease: %q", msg)
	}
	addrs, err := l.WaitAddress(ctx, "default", "web")
	if err != nil {
		t.Fatal(err)
	}
	node := answeringNode(t, ctx, l, addrs[0])
	if _, err := l.Admin.CoordinationV1().Leases("team").Get(ctx, "web", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("Lease team/web: err %v; want none written", err)
	}
	t.Logf("leaseName team/web: %q; %s answers from %s", msg, addrs[0], node)
}

// TestAgentOnlyNotesService: the operator notes' install has no cloud
// provider: their Service asks for its address with
// kube-vip.io/loadbalancerIPs (10.0.0.10, mapped into the lab's pool) and
// kube-vip announced it from the annotation. With vip-agent alone (no
// vip-ccm, no vip-ccm Lease) the Service is not announced from the
// annotation: after 30 s one agent records a Warning NoAddressAssigned
// saying no vip-ccm is running. Once vip-ccm runs, the requested address
// is given and answers from the client namespace.
func TestAgentOnlyNotesService(t *testing.T) {
	ctx, l := newLab(t)
	if err := l.CCM.Stop(syscall.SIGTERM, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	// A cluster that never ran vip-ccm has no leader Lease.
	leases, err := l.Admin.CoordinationV1().Leases("kube-system").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, le := range leases.Items {
		if strings.Contains(le.Name, "ccm") || strings.Contains(le.Name, "cloud-controller") {
			if err := l.Admin.CoordinationV1().Leases("kube-system").Delete(ctx, le.Name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := l.GlobalPool4().Addr().Next().Next().Next()
	if _, err := l.CreateService(ctx, "default", "nginx", lab.Annotate("kube-vip.io/loadbalancerIPs", want.String())); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	msg, err := waitWarning(ctx, l, "default", "nginx", "NoAddressAssigned")
	if err != nil {
		t.Fatalf("no NoAddressAssigned Warning: %v", err)
	}
	if !strings.Contains(msg, "no vip-ccm is running") || !strings.Contains(msg, want.String()) {
		t.Fatalf("NoAddressAssigned message %q; want the requested %s and that no vip-ccm is running", msg, want)
	}
	t.Logf("after %v: %s", time.Since(t0).Round(time.Second), msg)
	if err := l.CCM.Start(); err != nil {
		t.Fatal(err)
	}
	addrs, err := l.WaitAddress(ctx, "default", "nginx")
	if err != nil {
		t.Fatal(err)
	}
	if addrs[0] != want {
		t.Fatalf("the Service got %s; it asked for %s", addrs[0], want)
	}
	node := answeringNode(t, ctx, l, want)
	t.Logf("with vip-ccm running, %s answers from %s", want, node)
}

// TestSvcNamespaceAndHealthPort: kube-vip's svc_namespace and
// health_check_port in the blog's ARP DaemonSet (kube-vip's own RBAC). The
// agents serve the Services of that namespace only, and answer a liveness
// probe on the health port (kube-vip's probe path /healthz), so a probe
// there does not restart the Pod.
func TestSvcNamespaceAndHealthPort(t *testing.T) {
	ctx, l := newLab(t)
	if _, err := l.Admin.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	env := withEnv(blogARPEnv, "svc_namespace=team-a", "health_check_port=8081")
	logs := startKubeVipAgents(t, ctx, l, kubeVipRBAC, env)
	for node, log := range logs {
		if _, err := waitLog(ctx, log, "serving the Services of one namespace only", `namespace="team-a"`); err != nil {
			t.Fatalf("%s: %v", node, err)
		}
	}
	// The liveness probe: the kubelet GETs /healthz on the node's address.
	for _, n := range l.Nodes {
		hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: lab.DialerIn(l.Client)}}
		url := "http://" + net.JoinHostPort(n.IP4.String(), "8081") + "/healthz"
		var code int
		if err := lab.Poll(ctx, 100*time.Millisecond, func() (bool, error) {
			resp, err := hc.Get(url)
			if err != nil {
				return false, nil
			}
			resp.Body.Close()
			code = resp.StatusCode
			return code == http.StatusOK, nil
		}); err != nil {
			t.Fatalf("%s: %s never answered 200 (last %d): %v", n.Name, url, code, err)
		}
	}
	other := newService(t, ctx, l, "default", "other")
	addr := newService(t, ctx, l, "team-a", "web")
	node := answeringNode(t, ctx, l, addr)
	// default/other had its address first; the agents never see it.
	on, err := l.BoundOn(other)
	if err != nil {
		t.Fatal(err)
	}
	if len(on) != 0 {
		t.Fatalf("default/other (%s) is bound on %v; svc_namespace=team-a", other, on)
	}
	t.Logf("team-a/web %s answers from %s; default/other %s bound nowhere; /healthz on 8081 answers on every node", addr, node, other)
}

// TestOnPremDHCPService: the on-prem docs' DHCP Service (kubectl expose
// --load-balancer-ip=0.0.0.0, i.e. spec.loadBalancerIP 0.0.0.0) under the
// blog's ARP DaemonSet (with vip_interface=eth0) and kube-vip's own RBAC, dnsmasq on the lab
// segment, and a pools ConfigMap kept as kube-vip-cloud-provider had it (no
// allow-static-outside-pools key: 0.0.0.0 allowed in every namespace). The
// Service gets a leased address in status and answers from the client.
func TestOnPremDHCPService(t *testing.T) {
	ctx, l := newLab(t)
	srv, err := l.StartDHCP(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dnsmasq log:\n%s", srv.Proc.Tail(40))
		}
	})
	// kube-vip's generator with --interface eth0: a DHCP address needs the
	// interface its macvlan is made on (without one the agent refuses with
	// a DHCPNoInterface Warning naming vip_interface).
	env := withEnv(blogARPEnv, "vip_interface=eth0")
	logs := startKubeVipAgents(t, ctx, l, kubeVipRBAC, env)
	logTailsOnFailure(t, logs)
	if _, err := l.CreateService(ctx, "default", "nginx-dhcp", func(s *v1.Service) { s.Spec.LoadBalancerIP = "0.0.0.0" }); err != nil {
		t.Fatal(err)
	}
	var got netip.Addr
	pctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := lab.Poll(pctx, 50*time.Millisecond, func() (bool, error) {
		svc, err := l.Admin.CoreV1().Services("default").Get(ctx, "nginx-dhcp", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, a := range lab.Ingress(svc) {
			if a.Compare(srv.First) >= 0 && a.Compare(srv.Last) <= 0 {
				got = a
				return true, nil
			}
		}
		return false, nil
	}); err != nil {
		t.Fatalf("no leased address (%s-%s) in status: %v", srv.First, srv.Last, err)
	}
	node := answeringNode(t, ctx, l, got)
	t.Logf("nginx-dhcp leased %s, answered by %s under kube-vip's RBAC", got, node)
}
