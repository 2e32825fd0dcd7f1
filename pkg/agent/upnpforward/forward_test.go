package upnpforward

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"

	"github.com/vip-lb/vip/pkg/lbsvc"
	"github.com/vip-lb/vip/pkg/upnp"
)

func TestWantPorts(t *testing.T) {
	v4 := netip.MustParseAddr("10.77.0.200")
	v6 := netip.MustParseAddr("fd00:77::200")
	svc := func(ann map[string]string, ports ...v1.ServicePort) *v1.Service {
		return &v1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns", Annotations: ann},
			Spec: v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer, Ports: ports}}
	}
	tcp := func(p int32) v1.ServicePort { return v1.ServicePort{Port: p, Protocol: v1.ProtocolTCP} }
	udp := func(p int32) v1.ServicePort { return v1.ServicePort{Port: p, Protocol: v1.ProtocolUDP} }
	on := map[string]string{lbsvc.AnnotationForwardUPNP: "true"}
	with := func(k, v string) map[string]string {
		return map[string]string{lbsvc.AnnotationForwardUPNP: "true", k: v}
	}
	tests := []struct {
		name     string
		svc      *v1.Service
		vips     []netip.Addr
		opts     Options
		want     []string
		lease    time.Duration
		problems []string
	}{
		{name: "no annotation: nothing", svc: svc(nil, tcp(80)), vips: []netip.Addr{v4}},
		{name: "annotation false: nothing", svc: svc(map[string]string{lbsvc.AnnotationForwardUPNP: "false"}, tcp(80)), vips: []netip.Addr{v4}},
		{name: "no annotation, all Services", svc: svc(nil, tcp(80)), vips: []netip.Addr{v4}, opts: Options{AllServices: true, Lease: time.Hour},
			want: []string{"TCP/80→10.77.0.200"}, lease: time.Hour},
		{name: "TCP and UDP ports, default lease", svc: svc(on, tcp(80), udp(53), v1.ServicePort{Port: 8080}), vips: []netip.Addr{v4},
			want: []string{"TCP/80→10.77.0.200", "UDP/53→10.77.0.200", "TCP/8080→10.77.0.200"}, lease: time.Hour},
		{name: "agent default lease", svc: svc(on, tcp(80)), vips: []netip.Addr{v4}, opts: Options{Lease: 5 * time.Minute},
			want: []string{"TCP/80→10.77.0.200"}, lease: 5 * time.Minute},
		{name: "lease annotation", svc: svc(with(lbsvc.AnnotationUPNPLeaseDuration, "30s"), tcp(80)), vips: []netip.Addr{v4},
			want: []string{"TCP/80→10.77.0.200"}, lease: 30 * time.Second},
		{name: "lease annotation 0: permanent", svc: svc(with(lbsvc.AnnotationUPNPLeaseDuration, "0s"), tcp(80)), vips: []netip.Addr{v4},
			want: []string{"TCP/80→10.77.0.200"}, lease: 0},
		{name: "bad lease annotation: default and a problem", svc: svc(with(lbsvc.AnnotationUPNPLeaseDuration, "soon"), tcp(80)), vips: []netip.Addr{v4},
			want: []string{"TCP/80→10.77.0.200"}, lease: time.Hour, problems: []string{"is not a duration"}},
		{name: "negative lease annotation", svc: svc(with(lbsvc.AnnotationUPNPLeaseDuration, "-5m"), tcp(80)), vips: []netip.Addr{v4},
			want: []string{"TCP/80→10.77.0.200"}, lease: time.Hour, problems: []string{"is negative"}},
		{name: "SCTP skipped with a problem", svc: svc(on, v1.ServicePort{Port: 9, Protocol: v1.ProtocolSCTP}, tcp(80)), vips: []netip.Addr{v4},
			want: []string{"TCP/80→10.77.0.200"}, lease: time.Hour, problems: []string{"9/SCTP not forwarded"}},
		{name: "dual-stack: IPv4 mapped, IPv6 reported", svc: svc(on, tcp(80)), vips: []netip.Addr{v6, v4},
			want: []string{"TCP/80→10.77.0.200"}, lease: time.Hour, problems: []string{"fd00:77::200 not forwarded"}},
		{name: "no address held: no mapping", svc: svc(on, tcp(80)), lease: time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.opts.Lease == 0 {
				tt.opts.Lease = time.Hour // vip-agent's default
			}
			w, problems := wantPorts(tt.svc, tt.vips, tt.opts)
			var got []string
			for _, m := range w.Mappings {
				got = append(got, m.String())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("mappings %q, want %q", got, tt.want)
			}
			if len(w.Mappings) > 0 && w.Lease != tt.lease {
				t.Errorf("lease %v, want %v", w.Lease, tt.lease)
			}
			if len(problems) != len(tt.problems) {
				t.Fatalf("problems %q, want ones containing %q", problems, tt.problems)
			}
			for i, p := range tt.problems {
				if !strings.Contains(problems[i], p) {
					t.Errorf("problem %q does not contain %q", problems[i], p)
				}
			}
		})
	}
}

// FuzzWantPorts: whatever the annotations and ports say, no panic, no
// negative lease, only TCP/UDP mappings of valid ports, and a lease
// annotation that parses is used as given.
func FuzzWantPorts(f *testing.F) {
	f.Add("true", "30s", "TCP", int32(80))
	f.Add("TRUE", "0s", "udp", int32(53))
	f.Add("yes", "-1h", "SCTP", int32(9))
	f.Add("true", "1e9h", "", int32(70000))
	f.Fuzz(func(t *testing.T, forward, lease, proto string, port int32) {
		svc := &v1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "n", Annotations: map[string]string{
				lbsvc.AnnotationForwardUPNP: forward, lbsvc.AnnotationUPNPLeaseDuration: lease}},
			Spec: v1.ServiceSpec{Ports: []v1.ServicePort{{Port: port, Protocol: v1.Protocol(proto)}}},
		}
		vips := []netip.Addr{netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("fd00::3")}
		w, _ := wantPorts(svc, vips, Options{Lease: time.Hour})
		if w.Lease < 0 {
			t.Fatalf("negative lease %v", w.Lease)
		}
		for _, m := range w.Mappings {
			if (m.Protocol != upnp.TCP && m.Protocol != upnp.UDP) || m.Port == 0 || !m.VIP.Is4() {
				t.Fatalf("bad mapping %v", m)
			}
		}
		if d, err := time.ParseDuration(strings.TrimSpace(lease)); err == nil && d >= 0 && len(w.Mappings) > 0 && w.Lease != d {
			t.Fatalf("lease annotation %q parsed as %v, used %v", lease, d, w.Lease)
		}
	})
}

// recMapper records what the Forwarder sets per owner.
type recMapper struct {
	mu      sync.Mutex
	set     map[string]upnp.Want
	flushed []string
}

func (m *recMapper) Set(owner string, w upnp.Want) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.set[owner] = w
}

func (m *recMapper) Flush(_ context.Context, owner string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.flushed = append(m.flushed, owner)
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

// TestUPnPNeedsNamespaceOptIn: a Service's forwardUPNP annotation is honoured
// only where the pools ConfigMap allows its namespace (or the administrator
// forwards every Service); a refusal is one Warning and no mapping.
func TestUPnPNeedsNamespaceOptIn(t *testing.T) {
	tests := []struct {
		name    string
		data    map[string]string
		all     bool
		ns      string
		refused bool
	}{
		{"no key", nil, false, "team-a", true},
		{"namespace opted in", map[string]string{"allow-upnp-team-a": "true"}, false, "team-a", false},
		{"other namespace opted in", map[string]string{"allow-upnp-team-b": "true"}, false, "team-a", true},
		{"global", map[string]string{"allow-upnp-global": "true"}, false, "team-a", false},
		{"namespace says no over global", map[string]string{"allow-upnp-global": "true", "allow-upnp-team-a": "false"}, false, "team-a", true},
		{"not a bool reads as no", map[string]string{"allow-upnp-team-a": "yes please"}, false, "team-a", true},
		{"admin forwards every Service", nil, true, "team-a", false},
	}
	vip := []netip.Addr{netip.MustParseAddr("10.77.0.200")}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := record.NewFakeRecorder(16)
			m := &recMapper{set: map[string]upnp.Want{}}
			f := New(Options{Mapper: m, AllServices: tt.all, Lease: time.Hour, Recorder: rec, Logger: logr.Discard()})
			f.SetPools(tt.data)
			svc := &v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: tt.ns, Name: "web",
				Annotations: map[string]string{lbsvc.AnnotationForwardUPNP: "true"}},
				Spec: v1.ServiceSpec{Ports: []v1.ServicePort{{Port: 80, Protocol: v1.ProtocolTCP}}}}
			for range 2 {
				f.Serve("k", svc, vip)
				if got := len(m.set["k"].Mappings) == 0; got != tt.refused {
					t.Fatalf("refused = %v, want %v (set %+v)", got, tt.refused, m.set["k"])
				}
			}
			plain := svc.DeepCopy()
			plain.Annotations = nil
			f.Serve("k2", plain, vip)
			ev := events(rec)
			if tt.refused && (len(ev) != 1 || !strings.HasPrefix(ev[0], "Warning "+ReasonUPnPNotAllowed) || !strings.Contains(ev[0], "allow-upnp-"+tt.ns)) {
				t.Fatalf("want one UPnPNotAllowed Warning, got %q", ev)
			}
			if !tt.refused && len(ev) != 0 {
				t.Fatalf("events %q", ev)
			}
			f.Unserve(context.Background(), "k")
			if len(m.set["k"].Mappings) != 0 || !slices.Equal(m.flushed, []string{"k"}) {
				t.Fatalf("after Unserve: set %+v, flushed %v", m.set["k"], m.flushed)
			}
		})
	}
}

// TestReportNeedsTheService: the mapper's outcomes are Events on the
// Service, and dropped once it is gone.
func TestReportNeedsTheService(t *testing.T) {
	rec := record.NewFakeRecorder(16)
	svc := &v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"}}
	f := New(Options{Mapper: &recMapper{set: map[string]upnp.Want{}}, Recorder: rec, Logger: logr.Discard(),
		Service: func(key string) *v1.Service {
			if key == "ns/web" {
				return svc
			}
			return nil
		}})
	f.Report("ns/web", false, upnp.ReasonMapped, "Gateway forwards TCP/80")
	f.Report("ns/gone", true, upnp.ReasonUnmapped, "x")
	if ev := events(rec); len(ev) != 1 || !strings.HasPrefix(ev[0], "Normal "+upnp.ReasonMapped) {
		t.Fatalf("events %q", ev)
	}
}
