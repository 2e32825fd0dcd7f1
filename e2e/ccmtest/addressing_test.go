package ccmtest

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vip-lb/vip/pkg/lbsvc"
)

const annIPs = lbsvc.AnnotationLoadBalancerIPs

// addressingPools is the pools ConfigMap of TestAddressing. Every namespace a
// subtest uses has its own keys, so subtests do not disturb each other.
var addressingPools = map[string]string{
	// Global: IPv4 with a node address (.4) and the control-plane VIP (.3)
	// inside, and IPv6.
	"cidr-global":  "10.10.0.0/28",
	"range-global": "fd00:10::1-fd00:10::ff",
	// Namespace nsa: cidr before range, both before global.
	"cidr-nsa":  "10.20.0.0/30",
	"range-nsa": "10.20.1.1-10.20.1.2",
	// A namespace with pools of its own spills over to global only when
	// allowed.
	"fallthrough-nsa":   "true",
	"fallthrough-reuse": "true",
	// .0 and .255 are ordinary addresses here (tested in pkg/ipam); CIDR
	// ends are still skipped.
	"skip-dot0-dot255": "false",
	// IPv6-only namespace pool.
	"range-v6only": "fd00:30::1-fd00:30::3",
	// Sharing.
	"cidr-share":        "10.40.0.0/31",
	"allow-share-share": "true",
	// Release and reuse.
	"cidr-reuse": "10.80.0.0/31",
	// Overlapping entries are merged.
	"cidr-overlap":  "10.81.0.0/31,10.81.0.2/31",
	"range-overlap": "10.81.0.1-10.81.0.4",
}

const (
	cpVIP      = "10.10.0.3"
	nodeIPv4   = "10.10.0.4"
	nodeIPv6   = "fd00:10::2"
	nodeIPOut  = "10.200.0.9" // a node address outside every pool
	nodeIPOut6 = "fd00:200::9"
)

// TestAddressing runs one vip-ccm (leader election on, as deployed) against
// one API server and checks the address rules on Service status and Events.
func TestAddressing(t *testing.T) {
	h := New(t)
	cs := h.Admin
	ctx := tctx(t)
	h.SetPools(ctx, addressingPools)
	createNode(t, cs, "node-1", false,
		v1.NodeAddress{Type: v1.NodeInternalIP, Address: nodeIPv4},
		v1.NodeAddress{Type: v1.NodeInternalIP, Address: nodeIPv6},
		v1.NodeAddress{Type: v1.NodeHostName, Address: "node-1"})
	ccm := h.StartCCM("ccm", "--leader-elect=true", "--control-plane-address="+cpVIP, "--retry-after=2s", "--v=2")
	dualStack := supportsDualStack(t, h)

	t.Run("NamespaceBeforeGlobal", func(t *testing.T) {
		// cidr-nsa (4 addresses less its network and broadcast address),
		// then range-nsa (2), then global (fallthrough-nsa).
		want := []string{"10.20.0.1", "10.20.0.2", "10.20.1.1", "10.20.1.2", "10.10.0.1"}
		for i, w := range want {
			name := "a" + string(rune('0'+i))
			create(t, cs, LBService("nsa", name))
			wantIP(t, cs, "nsa", name, w) // one at a time: the order is deterministic
		}
		ev := waitEvent(t, cs, "nsa", "Service", "a0", v1.EventTypeNormal, "AddressAllocated")
		if !strings.Contains(ev.Message, "10.20.0.1") {
			t.Errorf("AddressAllocated event says %q", ev.Message)
		}
	})

	t.Run("GlobalSkipsNodeAndControlPlaneAddresses", func(t *testing.T) {
		var got []string
		for i := range 6 {
			name := "g" + string(rune('0'+i))
			create(t, cs, LBService("glob", name))
			got = append(got, waitIP(t, cs, "glob", name))
		}
		for _, ip := range got {
			if ip == cpVIP || ip == nodeIPv4 {
				t.Errorf("handed out forbidden address %s (all: %v)", ip, got)
			}
		}
		if !slices.Contains(got, "10.10.0.5") {
			t.Errorf("expected the pool to continue after the skipped addresses, got %v", got)
		}
	})

	t.Run("IPv6", func(t *testing.T) {
		create(t, cs, LBService("v6only", "s6", WithFamilies(v1.IPFamilyPolicySingleStack, v1.IPv6Protocol)))
		wantIP(t, cs, "v6only", "s6", "fd00:30::1")
		create(t, cs, LBService("glob6", "s6", WithFamilies(v1.IPFamilyPolicySingleStack, v1.IPv6Protocol)))
		wantIP(t, cs, "glob6", "s6", "fd00:10::1")
		// The node's IPv6 address is skipped.
		create(t, cs, LBService("glob6", "s7", WithFamilies(v1.IPFamilyPolicySingleStack, v1.IPv6Protocol)))
		wantIP(t, cs, "glob6", "s7", "fd00:10::3")
	})

	t.Run("DualStack", func(t *testing.T) {
		if !dualStack {
			t.Skip("the API server has no dual-stack service CIDRs")
		}
		create(t, cs, LBService("dual", "req", WithFamilies(v1.IPFamilyPolicyRequireDualStack, v1.IPv4Protocol, v1.IPv6Protocol)))
		ips := waitIPs(t, cs, "dual", "req", 2)
		if !is4(ips[0]) || is4(ips[1]) {
			t.Errorf("RequireDualStack [IPv4 IPv6]: want an IPv4 then an IPv6 address, got %v", ips)
		}
		create(t, cs, LBService("dual", "pref6", WithFamilies(v1.IPFamilyPolicyPreferDualStack, v1.IPv6Protocol, v1.IPv4Protocol)))
		ips = waitIPs(t, cs, "dual", "pref6", 2)
		if is4(ips[0]) || !is4(ips[1]) {
			t.Errorf("PreferDualStack [IPv6 IPv4]: want an IPv6 then an IPv4 address, got %v", ips)
		}
		// A dual-stack static request.
		create(t, cs, LBService("dual", "static", WithFamilies(v1.IPFamilyPolicyRequireDualStack, v1.IPv4Protocol, v1.IPv6Protocol),
			WithAnnotation(annIPs, "10.199.0.6,fd00:199::6")))
		ips = waitIPs(t, cs, "dual", "static", 2)
		if !slices.Equal(sorted(ips), []string{"10.199.0.6", "fd00:199::6"}) {
			t.Errorf("dual-stack static request: got %v", ips)
		}
	})

	t.Run("StaticRequests", func(t *testing.T) {
		// Annotation, outside every pool (allowed by default, as in the seeds).
		create(t, cs, LBService("static", "ann", WithAnnotation(annIPs, "10.199.0.5")))
		wantIP(t, cs, "static", "ann", "10.199.0.5")
		// Deprecated spec.loadBalancerIP (what kubectl expose --load-balancer-ip sets), inside the global pool.
		create(t, cs, LBService("static", "spec", func(s *v1.Service) { s.Spec.LoadBalancerIP = "10.10.0.12" }))
		wantIP(t, cs, "static", "spec", "10.10.0.12")
		// The annotation wins over spec.loadBalancerIP.
		create(t, cs, LBService("static", "both", WithAnnotation(annIPs, "10.199.0.7"),
			func(s *v1.Service) { s.Spec.LoadBalancerIP = "10.199.0.8" }))
		wantIP(t, cs, "static", "both", "10.199.0.7")
		// A second Service asking for a held address gets a conflict and waits.
		create(t, cs, LBService("static", "dup", WithAnnotation(annIPs, "10.199.0.5")))
		waitEvent(t, cs, "static", "Service", "dup", v1.EventTypeWarning, "AddressConflict")
		assertPending(t, cs, "static", "dup", pendingFor)
		// Garbage in the annotation: a Warning, pending.
		create(t, cs, LBService("static", "garbage", WithAnnotation(annIPs, "not-an-ip")))
		waitEvent(t, cs, "static", "Service", "garbage", v1.EventTypeWarning, "InvalidAddressRequest")
		assertPending(t, cs, "static", "garbage", 0)
		// 0.0.0.0 asks for DHCP: left to the agent, pending here.
		create(t, cs, LBService("static", "dhcp", WithAnnotation(annIPs, "0.0.0.0")))
		waitEvent(t, cs, "static", "Service", "dhcp", v1.EventTypeNormal, "WaitingForDHCP")
		assertPending(t, cs, "static", "dhcp", 0)
		// Changing the request moves the Service to the new address.
		patchAnnotation(t, h, "static", "ann", "10.199.0.15")
		waitFor(t, "static/ann moves to 10.199.0.15", func() bool {
			return slices.Equal(getIPs(t, h, "static", "ann"), []string{"10.199.0.15"})
		})
		// And the old address is free for the Service that waited for it.
		wantIP(t, cs, "static", "dup", "10.199.0.5")
	})

	t.Run("AllowShare", func(t *testing.T) {
		create(t, cs, LBService("share", "web", WithPorts(80)))
		a := waitIP(t, cs, "share", "web")
		create(t, cs, LBService("share", "tls", WithPorts(443)))
		if b := waitIP(t, cs, "share", "tls"); b != a {
			t.Errorf("different ports should share %s, got %s", a, b)
		}
		create(t, cs, LBService("share", "web2", WithPorts(80)))
		if c := waitIP(t, cs, "share", "web2"); c == a {
			t.Errorf("port 80 clashes, yet web2 got the shared address %s", c)
		}
		// A static request for the shared address: fine with other ports,
		// a conflict with a clashing one.
		create(t, cs, LBService("share", "dns", WithPorts(53), WithAnnotation(annIPs, a)))
		wantIP(t, cs, "share", "dns", a)
		create(t, cs, LBService("share", "clash", WithPorts(443), WithAnnotation(annIPs, a)))
		ev := waitEvent(t, cs, "share", "Service", "clash", v1.EventTypeWarning, "AddressConflict")
		if !strings.Contains(ev.Message, "clash") {
			t.Errorf("conflict event does not say why: %q", ev.Message)
		}
		assertPending(t, cs, "share", "clash", pendingFor)
		// Sharing is off in other namespaces: a static request for a held
		// address conflicts even with different ports.
		create(t, cs, LBService("noshare", "x", WithPorts(8443), WithAnnotation(annIPs, "10.199.0.7")))
		waitEvent(t, cs, "noshare", "Service", "x", v1.EventTypeWarning, "AddressConflict")
	})

	t.Run("ForbiddenRequests", func(t *testing.T) {
		for name, ip := range map[string]string{
			"node": nodeIPv4, "node6": nodeIPv6, "controlplane": cpVIP, "loopback": "127.0.0.1",
			"multicast": "224.0.0.5", "linklocal": "169.254.1.1", "loopback6": "::1",
		} {
			create(t, cs, LBService("forbid", name, WithAnnotation(annIPs, ip)))
		}
		// Other Services keep working meanwhile.
		create(t, cs, LBService("forbid", "fine"))
		waitIP(t, cs, "forbid", "fine")
		for _, name := range []string{"node", "node6", "controlplane", "loopback", "multicast", "linklocal", "loopback6"} {
			waitEvent(t, cs, "forbid", "Service", name, v1.EventTypeWarning, "AddressForbidden")
		}
		for _, name := range []string{"node", "controlplane", "loopback", "multicast"} {
			assertPending(t, cs, "forbid", name, 0)
		}
		assertPending(t, cs, "forbid", "node", pendingFor)
	})

	t.Run("NodeInitialisation", func(t *testing.T) {
		testNodeInit(t, h)
	})

	t.Run("OverlappingEntries", func(t *testing.T) {
		var got []string
		for i := range 5 {
			name := "o" + string(rune('0'+i))
			create(t, cs, LBService("overlap", name))
			got = append(got, waitIP(t, cs, "overlap", name))
		}
		// 10.81.0.0-3 (cidr, the /31 inside it merged) and 10.81.0.1-4
		// (range): five distinct addresses from the namespace pools.
		want := []string{"10.81.0.0", "10.81.0.1", "10.81.0.2", "10.81.0.3", "10.81.0.4"}
		if !slices.Equal(sorted(got), want) {
			t.Errorf("got %v, want %v", got, want)
		}
	})

	t.Run("ReleaseAndReuse", func(t *testing.T) {
		create(t, cs, LBService("reuse", "r1"))
		wantIP(t, cs, "reuse", "r1", "10.80.0.0")
		create(t, cs, LBService("reuse", "r2"))
		wantIP(t, cs, "reuse", "r2", "10.80.0.1")
		// Deleted: the finalizer goes, the address is released and reused.
		deleteSvc(t, cs, "reuse", "r1")
		waitEvent(t, cs, "reuse", "Service", "r1", v1.EventTypeNormal, "AddressReleased")
		create(t, cs, LBService("reuse", "r3"))
		wantIP(t, cs, "reuse", "r3", "10.80.0.0")
		// Type changed to ClusterIP: status cleared, finalizer removed,
		// address released and reused.
		svc, err := cs.CoreV1().Services("reuse").Get(ctx, "r2", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		svc.Spec.Type = v1.ServiceTypeClusterIP
		if _, err := cs.CoreV1().Services("reuse").Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "r2 loses its finalizer", func() bool {
			s, err := cs.CoreV1().Services("reuse").Get(ctx, "r2", metav1.GetOptions{})
			return err == nil && len(s.Finalizers) == 0 && len(s.Status.LoadBalancer.Ingress) == 0
		})
		create(t, cs, LBService("reuse", "r4"))
		wantIP(t, cs, "reuse", "r4", "10.80.0.1")
		// Back to LoadBalancer: r2 now gets an address from what is free
		// (global, as the namespace pool is full).
		svc, err = cs.CoreV1().Services("reuse").Get(ctx, "r2", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		svc.Spec.Type = v1.ServiceTypeLoadBalancer
		if ip := waitAfterUpdate(t, h, svc); strings.HasPrefix(ip, "10.80.") {
			t.Errorf("r2 got %s, held by r3 or r4", ip)
		}
	})

	t.Run("SearchOrderDesc", func(t *testing.T) {
		pools := clone(addressingPools)
		pools["search-order"] = "desc"
		pools["cidr-desc"] = "10.90.0.0/29"
		h.SetPools(ctx, pools)
		time.Sleep(time.Second) // let vip-ccm see the new pools (it retries anyway)
		create(t, cs, LBService("desc", "d1"))
		wantIP(t, cs, "desc", "d1", "10.90.0.6") // .7 is the broadcast address of the /29
		create(t, cs, LBService("desc", "d2"))
		wantIP(t, cs, "desc", "d2", "10.90.0.5")
	})

	t.Run("SkipEndIPsInCIDR", func(t *testing.T) {
		pools := clone(addressingPools)
		pools["skip-end-ips-in-cidr"] = "true"
		pools["cidr-skip"] = "10.91.0.0/30"
		pools["range-skip"] = "10.91.1.0-10.91.1.0" // ranges are not trimmed
		h.SetPools(ctx, pools)
		time.Sleep(time.Second)
		create(t, cs, LBService("skip", "k1"))
		wantIP(t, cs, "skip", "k1", "10.91.0.1")
		create(t, cs, LBService("skip", "k2"))
		wantIP(t, cs, "skip", "k2", "10.91.0.2")
		create(t, cs, LBService("skip", "k3"))
		wantIP(t, cs, "skip", "k3", "10.91.1.0")
	})

	t.Run("MetricsAndHealth", func(t *testing.T) {
		// /metrics goes through delegated authentication and authorization
		// (TokenReview, SubjectAccessReview: the RBAC for both is exercised).
		body := scrape(t, h, ccm, "/metrics", h.Env.AdminToken(), 200)
		for _, want := range []string{"vip_ccm_allocations_total", `vip_ccm_pool_used{pool="cidr-global"}`,
			`vip_ccm_pool_size{family="IPv4",pool="cidr-nsa"} 2` /* skip-end-ips is on by now */, `vip_ccm_pool_size{family="IPv6",pool="range-v6only"} 3`, "vip_ccm_allocation_failures_total", "vip_ccm_ensure_duration_seconds_bucket"} {
			if !strings.Contains(body, want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
		scrape(t, h, ccm, "/metrics", "", 403) // anonymous: refused
		scrape(t, h, ccm, "/healthz", "", 200) // always allowed, for probes
	})

	t.Run("DeployManifestsApply", func(t *testing.T) {
		// The API server validates the shipped Deployment (no controller
		// runs it here).
		root, err := RepoRoot()
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Env.ApplyFile(ctx, root+"/deploy/ccm/deployment.yaml"); err != nil {
			t.Fatal(err)
		}
		d, err := cs.AppsV1().Deployments("kube-system").Get(ctx, "vip-ccm", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if *d.Spec.Replicas != 2 || d.Spec.Template.Spec.ServiceAccountName != "vip-ccm" {
			t.Errorf("deployment: replicas %d, serviceAccount %q", *d.Spec.Replicas, d.Spec.Template.Spec.ServiceAccountName)
		}
	})

	t.Run("NoDuplicates", func(t *testing.T) {
		l, err := cs.CoreV1().Services("").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var svcs []v1.Service
		for _, s := range l.Items {
			if s.Namespace != "share" && s.Namespace != "noshare" { // sharing is intended there
				svcs = append(svcs, s)
			}
		}
		noDuplicates(t, svcs)
		if ok, err := ccm.Exited(); ok {
			t.Fatalf("vip-ccm exited: %v", err)
		}
	})
}

func is4(ip string) bool { return strings.Contains(ip, ".") }

func clone(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func getIPs(t *testing.T, h *Harness, ns, name string) []string {
	t.Helper()
	svc, err := h.Admin.CoreV1().Services(ns).Get(tctx(t), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return IngressIPs(svc)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(assignTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func patchAnnotation(t *testing.T, h *Harness, ns, name, value string) {
	t.Helper()
	svc, err := h.Admin.CoreV1().Services(ns).Get(tctx(t), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc.Annotations[annIPs] = value
	if _, err := h.Admin.CoreV1().Services(ns).Update(tctx(t), svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func waitAfterUpdate(t *testing.T, h *Harness, svc *v1.Service) string {
	t.Helper()
	no := false
	svc.Spec.AllocateLoadBalancerNodePorts = &no
	if _, err := h.Admin.CoreV1().Services(svc.Namespace).Update(tctx(t), svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	return waitIP(t, h.Admin, svc.Namespace, svc.Name)
}

// supportsDualStack reports whether the API server accepts a
// RequireDualStack Service.
func supportsDualStack(t *testing.T, h *Harness) bool {
	t.Helper()
	ctx := tctx(t)
	if err := EnsureNamespace(ctx, h.Admin, "probe"); err != nil {
		t.Fatal(err)
	}
	svc := LBService("probe", "dual", WithFamilies(v1.IPFamilyPolicyRequireDualStack, v1.IPv4Protocol, v1.IPv6Protocol))
	svc.Spec.Type = v1.ServiceTypeClusterIP
	svc.Spec.AllocateLoadBalancerNodePorts = nil
	_, err := h.Admin.CoreV1().Services("probe").Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Logf("dual-stack Services not supported by this API server: %v", err)
		return false
	}
	_ = h.Admin.CoreV1().Services("probe").Delete(ctx, "dual", metav1.DeleteOptions{})
	return true
}

// scrape GETs path from vip-ccm's secure port with the bearer token (none
// when empty) and checks the status code.
func scrape(t *testing.T, h *Harness, c *CCM, path, token string, code int) string {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} // self-signed serving cert
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(tctx(t), http.MethodGet, fmt.Sprintf("https://127.0.0.1:%d%s", c.Port, path), nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != code {
		t.Fatalf("GET %s: %s, want %d: %s", path, resp.Status, code, b)
	}
	return string(b)
}
