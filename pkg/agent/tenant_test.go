package agent

import (
	"strings"
	"testing"

	"github.com/go-logr/logr"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"

	"github.com/vip-lb/vip/pkg/ipam"
	"github.com/vip-lb/vip/pkg/lbsvc"
)

func tenantAgent(o Options, data map[string]string) (*Agent, *record.FakeRecorder) {
	rec := record.NewFakeRecorder(16)
	a := &Agent{o: o, rec: rec, log: logr.Discard()}
	cfg, _ := ipam.ParseConfig(data)
	a.ifaces = cfg
	a.setConsent(data)
	return a, rec
}

func events(rec *record.FakeRecorder) []string {
	var out []string
	for {
		select {
		case e := <-rec.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func ifaceSvc(ns, iface string) *v1.Service {
	s := &v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}}
	if iface != "" {
		s.Annotations = map[string]string{lbsvc.AnnotationServiceInterface: iface}
	}
	return s
}

func TestServiceInterfaceNeedsAdminConsent(t *testing.T) {
	pools := map[string]string{"interface-team-a": "vlan10", "interface-global": "eth1"}
	tests := []struct {
		name    string
		o       Options
		svc     *v1.Service
		want    string
		refused bool
	}{
		{"no annotation: namespace interface", Options{Interface: "eth0"}, ifaceSvc("team-a", ""), "vlan10", false},
		{"no annotation: global interface", Options{Interface: "eth0"}, ifaceSvc("team-b", ""), "eth1", false},
		{"management interface refused", Options{Interface: "eth0"}, ifaceSvc("team-b", "mgmt0"), "eth1", true},
		{"interface named by another namespace's key", Options{Interface: "eth0"}, ifaceSvc("team-b", "vlan10"), "vlan10", false},
		{"the agent's own interface", Options{Interface: "eth0"}, ifaceSvc("team-b", "eth0"), "eth0", false},
		{"listed by the agent flag", Options{Interface: "eth0", AllowedInterfaces: []string{"vlan20"}}, ifaceSvc("team-b", "vlan20"), "vlan20", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, rec := tenantAgent(tt.o, pools)
			for range 3 {
				if got := a.interfaceFor(tt.svc); got != tt.want {
					t.Fatalf("interfaceFor = %q, want %q", got, tt.want)
				}
			}
			ev := events(rec)
			if !tt.refused {
				if len(ev) != 0 {
					t.Fatalf("events %q", ev)
				}
				return
			}
			if len(ev) != 1 || !strings.HasPrefix(ev[0], "Warning "+ReasonInterfaceNotAllowed) || !strings.Contains(ev[0], "mgmt0") || !strings.Contains(ev[0], tt.want) {
				t.Fatalf("want one InterfaceNotAllowed Warning naming mgmt0 and %s, got %q", tt.want, ev)
			}
		})
	}
	// Without any admin interface the refused Service falls back to the
	// interface whose subnet covers the address, and a later change of the
	// annotation warns again.
	a, rec := tenantAgent(Options{}, nil)
	if got := a.interfaceFor(ifaceSvc("x", "mgmt0")); got != "" {
		t.Fatalf("got %q", got)
	}
	if got := a.interfaceFor(ifaceSvc("x", "mgmt1")); got != "" {
		t.Fatalf("got %q", got)
	}
	if ev := events(rec); len(ev) != 2 || !strings.Contains(ev[0], "subnet covers") {
		t.Fatalf("events %q", ev)
	}
}
