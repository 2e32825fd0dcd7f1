package agentapp

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vip-lb/vip/pkg/agentconfig"
)

func TestMetricsListenAddr(t *testing.T) {
	tests := []struct {
		name, metrics, node, api, want string
	}{
		{"node address from the downward API", ":2112", "10.0.0.5", "", "10.0.0.5:2112"},
		{"IPv6 node address", ":2112", "fd00::5", "", "[fd00::5]:2112"},
		{"loopback towards the API server is no node address", ":2112", "", "https://127.0.0.2:6443", ":2112"},
		{"explicit host wins", "10.0.0.9:9000", "10.0.0.5", "", "10.0.0.9:9000"},
		{"explicit everywhere", "0.0.0.0:2112", "10.0.0.5", "", "0.0.0.0:2112"},
		{"nothing usable: listen as asked", ":2112", "", "", ":2112"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := agentconfig.Default()
			c.MetricsAddress, c.NodeAddress = tt.metrics, tt.node
			got, err := metricsListenAddr(c, tt.api)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
	c := agentconfig.Default()
	c.MetricsAddress = "2112"
	if _, err := metricsListenAddr(c, ""); err == nil {
		t.Fatal("a port without ':' was accepted")
	}
}

func TestElectionHealthOnlyFromNodes(t *testing.T) {
	n := newNodeAddresses(nil)
	n.byNode["a"] = addressesOf(&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Status: v1.NodeStatus{Addresses: []v1.NodeAddress{
		{Type: v1.NodeInternalIP, Address: "10.0.0.5"}, {Type: v1.NodeInternalIP, Address: "fd00::5"}, {Type: v1.NodeHostName, Address: "a"},
	}}})
	h := fromNodes(n.Allowed, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }), logr.Discard())
	for remote, want := range map[string]int{
		"10.0.0.5:40000": http.StatusOK, "[fd00::5]:40000": http.StatusOK, "[::ffff:10.0.0.5]:1": http.StatusOK,
		"127.0.0.1:1": http.StatusOK, "10.0.0.100:40000": http.StatusForbidden, "[fd00::100]:1": http.StatusForbidden,
		"garbage": http.StatusForbidden,
	} {
		r := httptest.NewRequest(http.MethodGet, "/vip/election", nil)
		r.RemoteAddr = remote
		rr := httptest.NewRecorder()
		h.ServeHTTP(rr, r)
		if rr.Code != want {
			t.Errorf("from %s: %d, want %d", remote, rr.Code, want)
		}
	}
	if n.Allowed(netip.MustParseAddr("10.0.0.6")) {
		t.Error("10.0.0.6 allowed")
	}
}

// TestReadyz: /readyz has one meaning in every mode: 200 once every part
// the agent runs is ready. Without the Service controller (control plane
// only) nothing can be unready; with it, its readiness decides (synced and,
// in ARP mode, not fenced). /vip/election exists only where the mode has an
// election.
func TestReadyz(t *testing.T) {
	a := &app{reg: prometheus.NewRegistry()}
	election := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("election")) })
	for _, tc := range []struct {
		name         string
		svc          *services
		ready, elect int
	}{
		{"control plane only", nil, http.StatusOK, http.StatusNotFound},
		{"ARP, not synced or fenced", &services{ready: func() bool { return false }, election: election}, http.StatusServiceUnavailable, http.StatusOK},
		{"ARP, synced and not fenced", &services{ready: func() bool { return true }, election: election}, http.StatusOK, http.StatusOK},
		{"BGP, not synced", &services{ready: func() bool { return false }}, http.StatusServiceUnavailable, http.StatusNotFound},
		{"BGP, synced", &services{ready: func() bool { return true }}, http.StatusOK, http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := a.mux(tc.svc)
			for path, want := range map[string]int{"/readyz": tc.ready, "/healthz": http.StatusOK, "/metrics": http.StatusOK, "/vip/election": tc.elect} {
				rr := httptest.NewRecorder()
				h.ServeHTTP(rr, httptest.NewRequest(http.MethodGet, path, nil))
				if rr.Code != want {
					t.Errorf("%s: %d, want %d", path, rr.Code, want)
				}
			}
		})
	}
}
