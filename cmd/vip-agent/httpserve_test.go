package main

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/go-logr/logr"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
			c := defaultConfig()
			c.metricsAddr, c.nodeAddress = tt.metrics, tt.node
			got, err := metricsListenAddr(c, tt.api)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
	c := defaultConfig()
	c.metricsAddr = "2112"
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
