//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/vip-lb/vip/e2e/lab"
	"github.com/vip-lb/vip/pkg/agent/upnpforward"
	"github.com/vip-lb/vip/pkg/lbsvc"
	"github.com/vip-lb/vip/pkg/testbed"
)

// TestUPnP runs the real vip-agents with --enableUPNP against a real
// miniupnpd (Debian's source, rebuilt by hack/miniupnpd.sh) on a router
// namespace between the lab bridge and an external segment:
//
//   - an annotated Service announced by the agents gets a mapping per port
//     (TCP/80 and TCP/8080 → VIP), the owner reports the gateway's external
//     address in an Event, and a host on the external segment reaches the
//     Service through the router's external address; an unannotated Service
//     gets none;
//   - the mapping's lease (6 s) is renewed before it expires;
//   - a port removed from the Service loses its mapping, the other stays;
//   - a port the gateway does not allow: Warning Event on that Service only;
//   - miniupnpd stopped: Warning Event, the Service still served on its VIP
//     from the LAN; miniupnpd back as an IGDv1 device in secure mode (only
//     the internal client itself may map): the mapping is made again;
//   - the owner's agent killed: the new owner maps the port (the mapping's
//     description names the node) and serves the external host;
//   - the owner's agent stopped gracefully: it deletes its mapping before it
//     hands the Service over, so the next owner's mapping stays;
//   - Service deleted: mappings gone;
//   - agents stopped (SIGTERM): the owner removes its mappings on the way out.
func TestUPnP(t *testing.T) {
	binDir, err := testbed.DefaultBinDir()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(binDir, "miniupnpd")
	if st, err := os.Stat(bin); err != nil || st.Mode()&0o111 == 0 {
		t.Fatalf("%s missing: run `make bin/miniupnpd` (hack/miniupnpd.sh, as root)", bin)
	}
	// Namespace default is allowed UPnP by the admin (allow-upnp-default).
	l := l2Lab(t, lab.Options{AgentArgs: []string{"--enableUPNP", "--upnp-discovery-window=1s"},
		Pools: map[string]string{upnpforward.KeyPrefixAllowUPnP + "default": "true"}})
	r, err := l.AddRouter()
	if err != nil {
		t.Fatal(err)
	}
	gw := &upnpGateway{l: l, r: r, bin: bin}
	gw.start(t, false, false)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("miniupnpd log:\n%s", gw.proc.Tail(40))
		}
	})

	ctx := l2Ctx(t, 5*time.Minute)
	plain := l2Create(t, l, "default", []string{"plain"}, upnpPorts(nil, 9090))[0]
	web := l2Create(t, l, "default", []string{"web"}, upnpPorts(map[string]string{
		lbsvc.AnnotationForwardUPNP: "true", lbsvc.AnnotationUPNPLeaseDuration: "6s"}, 80, 8080))[0]
	owner := l2Holders(t, l, []l2Service{web})["web"]
	t.Logf("web %s owned by %s, plain %s; gateway %s (external %s)", web.VIP, owner, plain.VIP, r.LAN, r.WAN)

	t.Run("Mapped", func(t *testing.T) {
		gw.waitRules(t, "TCP/80 and TCP/8080 to the VIP", func(rs []lab.DNAT) bool {
			return hasRule(rs, "tcp", 80, web.VIP.String()) && hasRule(rs, "tcp", 8080, web.VIP.String())
		})
		waitEvent(t, l, web, "UPnPMapped", "external address "+r.WAN.String())
		got, err := l.GetFrom(ctx, r.Ext, r.WAN, 80, 2*time.Second)
		if err != nil || got != owner {
			t.Fatalf("external host → %s:80: answer %q, err %v; want %q (the owner)", r.WAN, got, err, owner)
		}
		if rs := gw.rules(t); hasRule(rs, "tcp", 9090, "") {
			t.Errorf("unannotated Service %s was mapped: %+v", plain, rs)
		}
	})

	t.Run("Refused", func(t *testing.T) {
		low := l2Create(t, l, "default", []string{"low"}, upnpPorts(map[string]string{lbsvc.AnnotationForwardUPNP: "true"}, 79))[0]
		defer func() { _ = l.DeleteService(ctx, "default", "low") }()
		waitEvent(t, l, low, "UPnPFailed", "606")
		if rs := gw.rules(t); hasRule(rs, "tcp", 79, "") || !hasRule(rs, "tcp", 80, web.VIP.String()) {
			t.Fatalf("a refused mapping changed the others: %+v", rs)
		}
	})

	t.Run("Renewed", func(t *testing.T) {
		first := gw.expiry(t, "TCP", 80)
		deadline := time.Now().Add(15 * time.Second)
		for gw.expiry(t, "TCP", 80) <= first {
			if time.Now().After(deadline) {
				t.Fatalf("lease of TCP/80 (expiry %d) not renewed within 15 s; lease file:\n%s", first, gw.leases(t))
			}
			time.Sleep(200 * time.Millisecond)
		}
		time.Sleep(7 * time.Second) // past the first lease
		if !hasRule(gw.rules(t), "tcp", 80, web.VIP.String()) {
			t.Fatal("mapping gone after its first lease although it was renewed")
		}
	})

	t.Run("PortRemoved", func(t *testing.T) {
		svc, err := l.Admin.CoreV1().Services("default").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		svc.Spec.Ports = svc.Spec.Ports[:1]
		if _, err := l.Admin.CoreV1().Services("default").Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		gw.waitRules(t, "TCP/8080 gone, TCP/80 kept", func(rs []lab.DNAT) bool {
			return hasRule(rs, "tcp", 80, web.VIP.String()) && !hasRule(rs, "tcp", 8080, "")
		})
		waitEvent(t, l, web, "UPnPUnmapped", "TCP/8080")
	})

	t.Run("GatewayDown", func(t *testing.T) {
		if err := gw.proc.Stop(syscall.SIGTERM, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		waitEvent(t, l, web, "UPnPFailed", "")
		got, err := l.ClientGet(ctx, web.VIP, lab.ServicePort, 2*time.Second)
		if err != nil || got != owner {
			t.Fatalf("LAN client → %s: answer %q, err %v; want %q", web.VIP, got, err, owner)
		}
		// Back as an IGDv1 device in secure mode, without the old mappings.
		gw.start(t, true, true)
		gw.waitRules(t, "TCP/80 mapped again", func(rs []lab.DNAT) bool { return hasRule(rs, "tcp", 80, web.VIP.String()) })
		waitEvent(t, l, web, "UPnPMapped", "WANIPConnection:1")
		got, err = l.GetFrom(ctx, r.Ext, r.WAN, 80, 2*time.Second)
		if err != nil || got != owner {
			t.Fatalf("external host → %s:80 after the gateway came back: %q, %v", r.WAN, got, err)
		}
	})

	t.Run("Failover", func(t *testing.T) {
		if want := "vip " + owner + " default/web"; gw.desc(t, "TCP", 80) != want {
			t.Fatalf("mapping description %q, want %q", gw.desc(t, "TCP", 80), want)
		}
		if err := l.StopAgent(owner, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		defer l2Restore(t, l, owner)
		next, err := l.WaitHolder(ctx, "default", "web", func(h string) bool { return h != "" && h != owner })
		if err != nil {
			t.Fatal(err)
		}
		gw.waitDesc(t, "TCP", 80, "vip "+next+" default/web")
		got, err := l.GetFrom(ctx, r.Ext, r.WAN, 80, 2*time.Second)
		if err != nil || got != next {
			t.Fatalf("external host → %s:80 after failover: %q, %v; want %q", r.WAN, got, err, next)
		}
		t.Logf("%s killed; %s holds web and its mapping", owner, next)
	})

	t.Run("HandOff", func(t *testing.T) {
		cur, err := l.WaitHolder(ctx, "default", "web", func(h string) bool { return h != "" })
		if err != nil {
			t.Fatal(err)
		}
		gw.waitDesc(t, "TCP", 80, "vip "+cur+" default/web")
		if err := l.StopAgent(cur, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		defer l2Restore(t, l, cur)
		next, err := l.WaitHolder(ctx, "default", "web", func(h string) bool { return h != "" && h != cur })
		if err != nil {
			t.Fatal(err)
		}
		gw.waitDesc(t, "TCP", 80, "vip "+next+" default/web")
		time.Sleep(2 * time.Second) // a late deletion by the old owner would show now
		if d := gw.desc(t, "TCP", 80); d != "vip "+next+" default/web" || !hasRule(gw.rules(t), "tcp", 80, web.VIP.String()) {
			t.Fatalf("after the hand-off from %s to %s: mapping %q, rules %+v", cur, next, d, gw.rules(t))
		}
		got, err := l.GetFrom(ctx, r.Ext, r.WAN, 80, 2*time.Second)
		if err != nil || got != next {
			t.Fatalf("external host → %s:80 after the hand-off: %q, %v; want %q", r.WAN, got, err, next)
		}
	})

	t.Run("ServiceDeleted", func(t *testing.T) {
		if err := l.DeleteService(ctx, "default", "web"); err != nil {
			t.Fatal(err)
		}
		gw.waitRules(t, "no mapping left", func(rs []lab.DNAT) bool { return len(rs) == 0 })
	})

	t.Run("AgentsStopped", func(t *testing.T) {
		s := l2Create(t, l, "default", []string{"web2"}, upnpPorts(map[string]string{lbsvc.AnnotationForwardUPNP: "true"}, 80))[0]
		holder := l2Holders(t, l, []l2Service{s})["web2"]
		gw.waitRules(t, "web2 mapped", func(rs []lab.DNAT) bool { return hasRule(rs, "tcp", 80, s.VIP.String()) })
		for _, n := range l.Nodes {
			if n.Name != holder {
				if err := l.StopAgent(n.Name, syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
			}
		}
		if !hasRule(gw.rules(t), "tcp", 80, s.VIP.String()) {
			t.Fatal("mapping gone when agents that do not own the Service stopped")
		}
		if err := l.StopAgent(holder, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		// Checked at once: the one-hour lease cannot have expired.
		if rs := gw.rules(t); len(rs) != 0 {
			t.Fatalf("mappings left after the owner's agent stopped: %+v", rs)
		}
	})
}

// upnpPorts sets annotations and TCP ports (each to the responders' port).
func upnpPorts(ann map[string]string, ports ...int32) lab.ServiceOption {
	return func(s *v1.Service) {
		s.Annotations = ann
		s.Spec.Ports = nil
		for _, p := range ports {
			s.Spec.Ports = append(s.Spec.Ports, v1.ServicePort{Name: "p" + strconv.Itoa(int(p)), Protocol: v1.ProtocolTCP,
				Port: p, TargetPort: intstr.FromInt32(lab.ServicePort)})
		}
	}
}

func hasRule(rs []lab.DNAT, proto string, port uint16, to string) bool {
	return slices.ContainsFunc(rs, func(r lab.DNAT) bool {
		return r.Protocol == proto && r.Port == port && (to == "" || r.To.Addr().String() == to)
	})
}

// waitEvent waits for an Event of reason on the Service whose message
// contains sub.
func waitEvent(t *testing.T, l *lab.Lab, s l2Service, reason, sub string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		msgs := l2Events(t, l, s, reason)
		if slices.ContainsFunc(msgs, func(m string) bool { return strings.Contains(m, sub) }) {
			t.Logf("%s Event: %q", reason, msgs[len(msgs)-1])
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s Event containing %q on %s within 60 s; got %q", reason, sub, s, msgs)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// upnpGateway is miniupnpd on the router namespace.
type upnpGateway struct {
	l    *lab.Lab
	r    *lab.Router
	bin  string
	proc *lab.Proc
	n    int
}

func (g *upnpGateway) leaseFile() string { return filepath.Join(g.l.Dir, "miniupnpd.leases") }

// start writes the nftables table (first time) or empties its chains, and
// starts miniupnpd (IGDv2, or IGDv1 with -1) without old mappings. It
// allows external ports 80 and up; in secure mode only the internal client
// itself may add or delete its mappings.
func (g *upnpGateway) start(t *testing.T, igdv1, secure bool) {
	t.Helper()
	ctx := l2Ctx(t, 30*time.Second)
	if g.n == 0 {
		table := `table inet filter {
  chain forward { type filter hook forward priority 0; policy accept; jump miniupnpd; }
  chain miniupnpd { }
  chain prerouting { type nat hook prerouting priority -100; policy accept; jump prerouting_miniupnpd; }
  chain postrouting { type nat hook postrouting priority 100; policy accept; jump postrouting_miniupnpd; }
  chain prerouting_miniupnpd { }
  chain postrouting_miniupnpd { }
}
`
		f := filepath.Join(g.l.Dir, "igd.nft")
		if err := os.WriteFile(f, []byte(table), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := g.l.Exec(ctx, g.r.NS, "nft", "-f", f); err != nil {
			t.Fatal(err)
		}
	} else {
		for _, c := range []string{"miniupnpd", "prerouting_miniupnpd", "postrouting_miniupnpd"} {
			if _, err := g.l.Exec(ctx, g.r.NS, "nft", "flush", "chain", "inet", "filter", c); err != nil {
				t.Fatal(err)
			}
		}
	}
	_ = os.Remove(g.leaseFile())
	secureMode := "no"
	if secure {
		secureMode = "yes"
	}
	conf := fmt.Sprintf(`ext_ifname=eth1
listening_ip=eth0
http_port=5000
enable_upnp=yes
enable_natpmp=no
secure_mode=%s
system_uptime=yes
lease_file=%s
uuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07b
upnp_table_name=filter
upnp_nat_table_name=filter
upnp_forward_chain=miniupnpd
upnp_nat_chain=prerouting_miniupnpd
upnp_nat_postrouting_chain=postrouting_miniupnpd
allow 80-65535 10.%d.0.0/16 80-65535
deny 0-65535 0.0.0.0/0 0-65535
`, secureMode, g.leaseFile(), g.l.X)
	cf := filepath.Join(g.l.Dir, "miniupnpd.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"-f", cf, "-d", "-P", filepath.Join(g.l.Dir, "miniupnpd.pid")}
	if igdv1 {
		args = append(args, "-1")
	}
	g.n++
	p, err := g.l.StartProc("miniupnpd", g.r.NS, "miniupnpd.log", g.bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	g.proc = p
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, _ := g.l.Exec(ctx, g.r.NS, "ss", "-ltn")
		if strings.Contains(out, ":5000 ") {
			return
		}
		if time.Now().After(deadline) || !p.Running() {
			t.Fatalf("miniupnpd not listening on :5000:\n%s", p.Tail(30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (g *upnpGateway) rules(t *testing.T) []lab.DNAT {
	t.Helper()
	rs, err := g.l.DNATRules(l2Ctx(t, 10*time.Second), g.r.NS)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func (g *upnpGateway) waitRules(t *testing.T, what string, ok func([]lab.DNAT) bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		rs := g.rules(t)
		if ok(rs) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway: %s: not within 60 s; DNAT rules %+v", what, rs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (g *upnpGateway) leases(t *testing.T) string {
	b, err := os.ReadFile(g.leaseFile())
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

// desc is the description miniupnpd's lease file records for a mapping.
func (g *upnpGateway) desc(t *testing.T, proto string, port int) string {
	for _, line := range strings.Split(g.leases(t), "\n") {
		f := strings.SplitN(line, ":", 6)
		if len(f) == 6 && f[0] == proto && f[1] == strconv.Itoa(port) {
			return f[5]
		}
	}
	return ""
}

// waitDesc waits until the mapping's description is want (it names the
// node that made it).
func (g *upnpGateway) waitDesc(t *testing.T, proto string, port int, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for g.desc(t, proto, port) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s/%d not mapped by %q within 30 s; lease file:\n%s", proto, port, want, g.leases(t))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// expiry is the expiry time miniupnpd's lease file records for a mapping
// (lines PROTO:EXTPORT:IP:PORT:EXPIRY:DESC); 0 if none.
func (g *upnpGateway) expiry(t *testing.T, proto string, port int) int64 {
	for _, line := range strings.Split(g.leases(t), "\n") {
		f := strings.SplitN(line, ":", 6)
		if len(f) == 6 && f[0] == proto && f[1] == strconv.Itoa(port) {
			v, _ := strconv.ParseInt(f[4], 10, 64)
			return v
		}
	}
	return 0
}
