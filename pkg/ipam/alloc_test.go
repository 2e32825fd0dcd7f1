package ipam

import (
	"errors"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// step is one operation on a shared allocator, in order. Exactly one of
// config, req, release, restore, ports, forbid is set; check runs afterwards.
type step struct {
	desc    string
	config  map[string]string
	req     *Request
	release string
	restore *restored
	ports   *portUpdate
	forbid  []string // addresses the caller's Forbidden func refuses
	// parity applies config exactly; otherwise the CIDR end and .0/.255
	// skipping of picks is switched off, so the scenarios below test the
	// search mechanics with every address of a pool available.
	parity bool

	want    string // expected addresses, comma-separated, in order
	wantErr error  // checked with errors.Is
	holders map[string]string
	used    map[string]int
}

type restored struct {
	key, ns    string
	addrs      string
	ports      []string
	shareable  bool
	sharingKey string
	shareWith  []string
}

type portUpdate struct {
	key   string
	ports []string
}

func rq(key string, fams ...Family) *Request {
	ns, _, _ := strings.Cut(key, "/")
	return &Request{Key: key, Namespace: ns, Families: fams}
}

func withPorts(r *Request, ports ...string) *Request { r.Ports = parsePorts(ports); return r }

func static(r *Request, addrs string) *Request { r.Requested = parseAddrs(addrs); return r }

func shareWith(r *Request, key string, namespaces ...string) *Request {
	r.SharingKey, r.ShareWith = key, namespaces
	return r
}

// parsePorts turns "tcp/80" (or "80") into Ports.
func parsePorts(in []string) []Port {
	var out []Port
	for _, s := range in {
		proto, num, ok := strings.Cut(s, "/")
		if !ok {
			proto, num = "", s
		}
		n, err := strconv.ParseUint(num, 10, 16)
		if err != nil {
			panic(err)
		}
		out = append(out, Port{Proto: proto, Port: uint16(n)})
	}
	return out
}

func parseAddrs(s string) []netip.Addr {
	var out []netip.Addr
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, netip.MustParseAddr(f))
		}
	}
	return out
}

func joinAddrs(as []netip.Addr) string {
	var s []string
	for _, a := range as {
		s = append(s, a.String())
	}
	return strings.Join(s, ",")
}

func runSteps(t *testing.T, steps []step) {
	t.Helper()
	a := NewAllocator()
	for i, s := range steps {
		var got []netip.Addr
		var err error
		switch {
		case s.config != nil:
			cfg, errs := ParseConfig(s.config)
			if len(errs) > 0 {
				t.Fatalf("step %d (%s): config errors %v", i, s.desc, errs)
			}
			if !s.parity {
				cfg.keepDot0 = true
				for _, p := range cfg.pools {
					p.ends = nil
				}
			}
			a.SetConfig(cfg)
		case s.req != nil:
			got, err = a.Assign(*s.req)
		case s.release != "":
			a.Release(s.release)
		case s.restore != nil:
			r := s.restore
			a.Restore(Request{Key: r.key, Namespace: r.ns, Ports: parsePorts(r.ports), SharingKey: r.sharingKey, ShareWith: r.shareWith},
				parseAddrs(r.addrs), r.shareable)
		case s.ports != nil:
			err = a.UpdatePorts(s.ports.key, parsePorts(s.ports.ports))
		case s.forbid != nil:
			bad := parseAddrs(strings.Join(s.forbid, ","))
			a.SetForbidden(func(x netip.Addr) bool { return slices.Contains(bad, x) })
		}
		if !errors.Is(err, s.wantErr) || (err != nil && s.wantErr == nil) {
			t.Errorf("step %d (%s): err = %v, want %v", i, s.desc, err, s.wantErr)
		}
		if g := joinAddrs(got); s.req != nil && g != s.want {
			t.Errorf("step %d (%s): got %q, want %q", i, s.desc, g, s.want)
		}
		for addr, want := range s.holders {
			if g := strings.Join(a.Holders(netip.MustParseAddr(addr)), ","); g != want {
				t.Errorf("step %d (%s): Holders(%s) = %q, want %q", i, s.desc, addr, g, want)
			}
		}
		for pool, want := range s.used {
			if g := a.Used(pool); g != want {
				t.Errorf("step %d (%s): Used(%s) = %d, want %d", i, s.desc, pool, g, want)
			}
		}
		checkInternal(t, a)
	}
}

func TestScenarios(t *testing.T) {
	scenarios := []struct {
		name  string
		steps []step
	}{
		{"lowest first, exhaustion, idempotent, reuse after release", []step{
			{config: map[string]string{"cidr-global": "10.0.0.0/30"}},
			{desc: "a", req: rq("ns/a", IPv4), want: "10.0.0.0"},
			{desc: "b", req: rq("ns/b", IPv4), want: "10.0.0.1"},
			{desc: "c", req: rq("ns/c"), want: "10.0.0.2"},
			{desc: "d", req: rq("ns/d", IPv4), want: "10.0.0.3", used: map[string]int{"cidr-global": 4}},
			{desc: "e exhausted", req: rq("ns/e", IPv4), wantErr: ErrPoolExhausted},
			{desc: "a again", req: rq("ns/a", IPv4), want: "10.0.0.0"},
			{desc: "a without families keeps its family", req: rq("ns/a"), want: "10.0.0.0"},
			{release: "ns/b", holders: map[string]string{"10.0.0.1": ""}, used: map[string]int{"cidr-global": 3}},
			{desc: "e takes the released address", req: rq("ns/e", IPv4), want: "10.0.0.1"},
			{release: "ns/c"},
			{release: "ns/a"},
			{desc: "lowest again", req: rq("ns/f", IPv4), want: "10.0.0.0"},
		}},
		{"search-order desc", []step{
			{config: map[string]string{"range-global": "10.0.0.10-10.0.0.12,10.0.1.1-10.0.1.2", "search-order": "desc"}},
			{req: rq("ns/a", IPv4), want: "10.0.1.2"},
			{req: rq("ns/b", IPv4), want: "10.0.1.1"},
			{req: rq("ns/c", IPv4), want: "10.0.0.12"},
			{release: "ns/a"},
			{req: rq("ns/d", IPv4), want: "10.0.1.2"},
		}},
		{"skip-end-ips /24 asc and desc", []step{
			{config: map[string]string{"cidr-global": "10.0.0.0/24", "skip-end-ips-in-cidr": "true"}},
			{req: rq("ns/a", IPv4), want: "10.0.0.1"},
			{config: map[string]string{"cidr-global": "10.0.0.0/24", "skip-end-ips-in-cidr": "true", "search-order": "desc"}},
			{req: rq("ns/b", IPv4), want: "10.0.0.254"},
		}},
		{"skip-end-ips /30", []step{
			{config: map[string]string{"cidr-global": "10.0.0.0/30", "skip-end-ips-in-cidr": "true"}},
			{req: rq("ns/a", IPv4), want: "10.0.0.1"},
			{req: rq("ns/b", IPv4), want: "10.0.0.2"},
			{req: rq("ns/c", IPv4), wantErr: ErrPoolExhausted},
		}},
		{"skip-end-ips /31 /32 and IPv6 skip nothing", []step{
			{config: map[string]string{"cidr-global": "10.0.0.0/31,10.0.1.9/32,fd00::/127", "skip-end-ips-in-cidr": "true"}},
			{req: rq("ns/a", IPv4), want: "10.0.0.0"},
			{req: rq("ns/b", IPv4), want: "10.0.0.1"},
			{req: rq("ns/c", IPv4), want: "10.0.1.9"},
			{req: rq("ns/d", IPv4), wantErr: ErrPoolExhausted},
			{req: rq("ns/e", IPv6), want: "fd00::"},
			{req: rq("ns/f", IPv6), want: "fd00::1"},
		}},
		{"without skip-end-ips, .0 and .255 are ordinary addresses", []step{
			{config: map[string]string{"range-global": "10.0.0.255-10.0.1.0"}},
			{req: rq("ns/a", IPv4), want: "10.0.0.255"},
			{req: rq("ns/b", IPv4), want: "10.0.1.0"},
		}},
		{"namespace pools before global; cidr before range", []step{
			{config: map[string]string{"cidr-dev": "10.1.0.0/31", "range-dev": "10.2.0.5-10.2.0.5", "cidr-global": "10.9.0.0/24", "fallthrough-dev": "true"}},
			{req: rq("dev/a", IPv4), want: "10.1.0.0"},
			{req: rq("dev/b", IPv4), want: "10.1.0.1"},
			{req: rq("dev/c", IPv4), want: "10.2.0.5"},
			{req: rq("dev/d", IPv4), want: "10.9.0.0", used: map[string]int{"cidr-dev": 2, "range-dev": 1, "cidr-global": 1}},
			{desc: "other namespaces never see dev pools", req: rq("prod/x", IPv4), want: "10.9.0.1"},
		}},
		{"overlapping pools never hand out an address twice", []step{
			{config: map[string]string{"cidr-dev": "10.0.0.0/30", "range-global": "10.0.0.2-10.0.0.5", "fallthrough-global": "true"}},
			{req: rq("dev/a", IPv4), want: "10.0.0.0"},
			{req: rq("prod/b", IPv4), want: "10.0.0.2"},
			{req: rq("dev/c", IPv4), want: "10.0.0.1"},
			{req: rq("dev/d", IPv4), want: "10.0.0.3"},
			{req: rq("prod/e", IPv4), want: "10.0.0.4", used: map[string]int{"cidr-dev": 4, "range-global": 3}},
			{req: rq("dev/f", IPv4), want: "10.0.0.5"},
			{req: rq("prod/g", IPv4), wantErr: ErrPoolExhausted},
			{release: "prod/b"},
			{desc: "freed overlap address is found by both pools", req: rq("dev/h", IPv4), want: "10.0.0.2"},
		}},
		{"pools edited under assignments", []step{
			{config: map[string]string{"cidr-global": "10.0.0.0/30"}},
			{req: rq("ns/a", IPv4), want: "10.0.0.0"},
			{req: rq("ns/b", IPv4), want: "10.0.0.1"},
			{config: map[string]string{"cidr-global": "10.0.1.0/30"}, used: map[string]int{"cidr-global": 0}},
			{desc: "a keeps its address outside every pool", req: rq("ns/a", IPv4), want: "10.0.0.0"},
			{req: rq("ns/c", IPv4), want: "10.0.1.0", holders: map[string]string{"10.0.0.0": "ns/a"}, used: map[string]int{"cidr-global": 1}},
			{config: map[string]string{"cidr-global": "10.0.0.0/23"}, used: map[string]int{"cidr-global": 3}},
			{req: rq("ns/d", IPv4), want: "10.0.0.2"},
			{desc: "pools removed: assignment kept", config: map[string]string{}},
			{req: rq("ns/a", IPv4), want: "10.0.0.0"},
			{req: rq("ns/e", IPv4), wantErr: ErrNoPool},
		}},
		{"sharing with and without port clash", []step{
			{config: map[string]string{"cidr-global": "10.0.0.0/29", "allow-share-global": "true"}},
			{req: withPorts(rq("ns/a", IPv4), "tcp/80"), want: "10.0.0.0"},
			{desc: "different port joins", req: withPorts(rq("ns/b", IPv4), "TCP/443"), want: "10.0.0.0"},
			{desc: "same port does not", req: withPorts(rq("ns/c", IPv4), "tcp/80"), want: "10.0.0.1"},
			{desc: "other protocol joins", req: withPorts(rq("ns/d", IPv4), "udp/80"), want: "10.0.0.0"},
			{desc: "no ports claims a whole address", req: rq("ns/e", IPv4), want: "10.0.0.2"},
			{desc: "static next to a portless service", req: withPorts(static(rq("ns/f"), "10.0.0.2"), "tcp/8080"), wantErr: ErrConflict},
			{desc: "static next to compatible ones", req: withPorts(static(rq("ns/g"), "10.0.0.0"), "tcp/22"), want: "10.0.0.0",
				holders: map[string]string{"10.0.0.0": "ns/a,ns/b,ns/d,ns/g"}, used: map[string]int{"cidr-global": 3}},
			{desc: "clashing static", req: withPorts(static(rq("ns/h"), "10.0.0.0"), "tcp/443"), wantErr: ErrConflict},
			{release: "ns/a", holders: map[string]string{"10.0.0.0": "ns/b,ns/d,ns/g"}},
			{desc: "port 80 free again on the shared address", req: withPorts(rq("ns/i", IPv4), "tcp/80"), want: "10.0.0.0"},
		}},
		{"sharing needs consent of both sides", []step{
			{config: map[string]string{"cidr-global": "10.0.0.0/29", "allow-share-dev": "true"}},
			{req: withPorts(rq("dev/a", IPv4), "tcp/80"), want: "10.0.0.0"},
			{req: withPorts(rq("dev/b", IPv4), "tcp/443"), want: "10.0.0.0"},
			{desc: "prod may not share", req: withPorts(rq("prod/c", IPv4), "tcp/22"), want: "10.0.0.1"},
			{req: withPorts(static(rq("prod/d"), "10.0.0.0"), "tcp/23"), wantErr: ErrConflict},
			{desc: "dev may not join a prod address", req: withPorts(static(rq("dev/e"), "10.0.0.1"), "tcp/24"), wantErr: ErrConflict},
			{desc: "default: no sharing", config: map[string]string{"cidr-global": "10.0.0.0/29"}},
			{req: withPorts(static(rq("dev/f"), "10.0.0.0"), "tcp/25"), wantErr: ErrConflict},
		}},
		{"sharing across namespaces needs consent on both Services", []step{
			{config: map[string]string{"cidr-global": "10.0.0.0/29", "allow-share-global": "true"}},
			{req: withPorts(rq("a/web", IPv4), "tcp/80"), want: "10.0.0.0"},
			{desc: "admin sharing alone does not let another namespace join",
				req: withPorts(static(rq("b/x"), "10.0.0.0"), "tcp/81"), wantErr: ErrConflict},
			{desc: "nor does a pick join it", req: withPorts(rq("b/y", IPv4), "tcp/82"), want: "10.0.0.1"},
			{desc: "consent on one side only", req: shareWith(withPorts(static(rq("b/z"), "10.0.0.0"), "tcp/83"), "k", "a"), wantErr: ErrConflict},
			{restore: &restored{key: "a/web", ns: "a", addrs: "10.0.0.0", ports: []string{"tcp/80"}, shareable: true, sharingKey: "k", shareWith: []string{"b"}}},
			{desc: "another key", req: shareWith(withPorts(static(rq("b/z"), "10.0.0.0"), "tcp/83"), "other", "a"), wantErr: ErrConflict},
			{desc: "the right key but not listing namespace a", req: shareWith(withPorts(static(rq("b/z"), "10.0.0.0"), "tcp/83"), "k", "c"), wantErr: ErrConflict},
			{desc: "both sides agree", req: shareWith(withPorts(static(rq("b/z"), "10.0.0.0"), "tcp/83"), "k", "*"), want: "10.0.0.0",
				holders: map[string]string{"10.0.0.0": "a/web,b/z"}},
			{desc: "a third namespace is not listed by a/web", req: shareWith(withPorts(static(rq("c/w"), "10.0.0.0"), "tcp/84"), "k", "*"), wantErr: ErrConflict},
			{desc: "ports still count", req: shareWith(withPorts(static(rq("b/p"), "10.0.0.0"), "tcp/80"), "k", "a"), wantErr: ErrConflict},
		}},
		{"pools are a boundary for requested addresses", []step{
			{config: map[string]string{"cidr-team-a": "10.1.0.0/24", "cidr-team-b": "10.2.0.0/24", "cidr-global": "10.9.0.0/24"}},
			{desc: "legacy ConfigMap: outside every pool is allowed", req: static(rq("team-a/x"), "192.168.1.1"), want: "192.168.1.1"},
			{desc: "own pool", req: static(rq("team-a/y"), "10.1.0.7"), want: "10.1.0.7"},
			{desc: "global pool", req: static(rq("team-a/z"), "10.9.0.7"), want: "10.9.0.7"},
			{desc: "another namespace's pool, legacy ConfigMap or not", req: static(rq("team-a/w"), "10.2.0.7"), wantErr: ErrOtherPool},
			{config: map[string]string{"cidr-team-a": "10.1.0.0/24", "cidr-team-b": "10.2.0.0/24", "allow-static-outside-pools": "true"}},
			{req: static(rq("team-a/w"), "10.2.0.7"), wantErr: ErrOtherPool},
			{config: map[string]string{"cidr-team-a": "10.1.0.0/24", "cidr-team-b": "10.2.0.0/24", "allow-static-outside-pools": "false",
				"allow-static-outside-pools-infra": "true"}},
			{req: static(rq("team-a/v"), "192.168.1.2"), wantErr: ErrOutsidePools},
			{desc: "a trusted namespace", req: static(rq("infra/v"), "192.168.1.2"), want: "192.168.1.2"},
			{desc: "a trusted namespace still cannot take another namespace's pool", req: static(rq("infra/u"), "10.2.0.8"), wantErr: ErrOtherPool},
			{desc: "overlapping own pool wins", config: map[string]string{"cidr-team-a": "10.2.0.0/25", "cidr-team-b": "10.2.0.0/24"}},
			{req: static(rq("team-a/t"), "10.2.0.9"), want: "10.2.0.9"},
			{req: static(rq("team-a/s"), "10.2.0.200"), wantErr: ErrOtherPool},
			{desc: "held addresses never change", req: static(rq("team-a/y"), "10.1.0.7"), want: "10.1.0.7"},
		}},
		{"pick parity with kube-vip-cloud-provider", []step{
			{parity: true, config: map[string]string{"cidr-global": "10.0.0.0/23"}},
			{desc: "network address skipped", req: rq("ns/a", IPv4), want: "10.0.0.1"},
			{parity: true, config: map[string]string{"cidr-global": "10.0.0.0/23", "search-order": "desc"}},
			{desc: "broadcast skipped", req: rq("ns/b", IPv4), want: "10.0.1.254"},
			{parity: true, config: map[string]string{"range-global": "10.0.0.254-10.0.1.1"}},
			{desc: ".255 and .0 skipped in ranges too", req: rq("ns/c", IPv4), want: "10.0.0.254"},
			{req: rq("ns/d", IPv4), want: "10.0.1.1"},
			{parity: true, config: map[string]string{"range-global": "10.0.0.254-10.0.1.1", "skip-dot0-dot255": "false"}},
			{desc: "skip-dot0-dot255 false", req: rq("ns/e", IPv4), want: "10.0.0.255"},
			{parity: true, config: map[string]string{"cidr-global": "10.0.2.0/24", "skip-dot0-dot255": "false"}},
			{desc: "CIDR ends are always skipped", req: rq("ns/f", IPv4), want: "10.0.2.1"},
			{parity: true, config: map[string]string{"cidr-global": "10.0.3.4/31,10.0.4.0/32"}},
			{desc: "/31 and /32 have no ends, .0 still skipped", req: rq("ns/g", IPv4), want: "10.0.3.4"},
			{req: rq("ns/h", IPv4), want: "10.0.3.5"},
			{req: rq("ns/i", IPv4), wantErr: ErrPoolExhausted},
			{parity: true, config: map[string]string{"cidr-global": "fd00::/126,fd01::/127"}},
			{desc: "IPv6 subnet-router anycast skipped", req: rq("ns/j", IPv6), want: "fd00::1"},
			{req: rq("ns/k", IPv6), want: "fd00::2"},
			{req: rq("ns/l", IPv6), want: "fd00::3"},
			{desc: "/127 has none", req: rq("ns/m", IPv6), want: "fd01::"},
			{desc: "requested addresses are not affected", req: static(rq("ns/n"), "10.0.5.0"), want: "10.0.5.0"},
			{desc: "held addresses never change", req: rq("ns/a", IPv4), want: "10.0.0.1"},
		}},
		{"a namespace pool is a cap unless fallthrough", []step{
			{config: map[string]string{"cidr-dev": "10.1.0.0/31", "cidr-global": "10.9.0.0/24"}},
			{req: rq("dev/a", IPv4), want: "10.1.0.0"},
			{req: rq("dev/b", IPv4), want: "10.1.0.1"},
			{req: rq("dev/c", IPv4), wantErr: ErrPoolExhausted},
			{desc: "no IPv6 in dev's pools", req: rq("dev/d", IPv6), wantErr: ErrNoPool},
			{req: rq("prod/x", IPv4), want: "10.9.0.0"},
			{config: map[string]string{"cidr-dev": "10.1.0.0/31", "cidr-global": "10.9.0.0/24", "fallthrough-global": "true", "fallthrough-dev": "false"}},
			{desc: "fallthrough-<ns> beats fallthrough-global", req: rq("dev/c", IPv4), wantErr: ErrPoolExhausted},
			{config: map[string]string{"cidr-dev": "10.1.0.0/31", "cidr-global": "10.9.0.0/24", "fallthrough-dev": "true"}},
			{req: rq("dev/c", IPv4), want: "10.9.0.1"},
			{desc: "back to a cap: held addresses never change", config: map[string]string{"cidr-dev": "10.1.0.0/31", "cidr-global": "10.9.0.0/24"}},
			{req: rq("dev/c", IPv4), want: "10.9.0.1"},
		}},
		{"UpdatePorts on a shared address", []step{
			{config: map[string]string{"cidr-global": "10.0.0.0/29", "allow-share-global": "true"}},
			{req: withPorts(rq("ns/a", IPv4), "tcp/80"), want: "10.0.0.0"},
			{req: withPorts(rq("ns/b", IPv4), "tcp/443"), want: "10.0.0.0"},
			{ports: &portUpdate{"ns/b", []string{"tcp/80"}}, wantErr: ErrConflict},
			{desc: "ports unchanged after the refusal", req: withPorts(rq("ns/c", IPv4), "tcp/80"), want: "10.0.0.1"},
			{ports: &portUpdate{"ns/b", []string{"tcp/8443"}}},
			{req: withPorts(rq("ns/d", IPv4), "tcp/443"), want: "10.0.0.0"},
			{desc: "re-assign with clashing ports", req: withPorts(rq("ns/d", IPv4), "tcp/80"), wantErr: ErrConflict},
			{ports: &portUpdate{"ns/unknown", []string{"tcp/1"}}},
		}},
		{"static requests", []step{
			{config: map[string]string{"cidr-global": "10.0.0.0/30"}},
			{desc: "outside the pools is allowed by default", req: static(rq("ns/a"), "192.168.1.10"), want: "192.168.1.10"},
			{desc: "inside a pool", req: static(rq("ns/b"), "10.0.0.0"), want: "10.0.0.0"},
			{desc: "pool pick skips the static address", req: rq("ns/c", IPv4), want: "10.0.0.1"},
			{desc: "held", req: static(rq("ns/d"), "10.0.0.1"), wantErr: ErrConflict},
			{desc: "mapped form is the same address", req: static(rq("ns/d"), "::ffff:10.0.0.1"), wantErr: ErrConflict},
			{desc: "change of static address", req: static(rq("ns/a"), "192.168.1.11"), want: "192.168.1.11",
				holders: map[string]string{"192.168.1.10": "", "192.168.1.11": "ns/a"}},
			{desc: "failed change keeps the old one", req: static(rq("ns/a"), "10.0.0.0"), wantErr: ErrConflict,
				holders: map[string]string{"192.168.1.11": "ns/a"}},
			{desc: "static overrides a pool assignment", req: static(rq("ns/c"), "10.0.0.3"), want: "10.0.0.3",
				holders: map[string]string{"10.0.0.1": ""}},
			{desc: "a key that had a static address keeps it", req: rq("ns/c", IPv4), want: "10.0.0.3"},
			{config: map[string]string{"cidr-global": "10.0.0.0/30,fd00::/120", "cidr-dev": "10.5.0.0/30", "allow-static-outside-pools": "false"}},
			{req: static(rq("ns/e"), "192.168.1.12"), wantErr: ErrOutsidePools},
			{desc: "another namespace's pool is refused", req: static(rq("ns/e"), "10.5.0.1"), wantErr: ErrOtherPool},
			{req: static(rq("dev/e"), "10.5.0.1"), want: "10.5.0.1"},
			{desc: "old assignments outside pools stay", req: static(rq("ns/a"), "192.168.1.11"), want: "192.168.1.11"},
			{desc: "dual-stack static", req: static(rq("ns/f"), "10.0.0.2,fd00::5"), want: "10.0.0.2,fd00::5"},
		}},
		{"forbidden addresses", []step{
			{config: map[string]string{"cidr-global": "10.0.0.0/29"}},
			{req: static(rq("ns/a"), "127.0.0.1"), wantErr: ErrForbidden},
			{req: static(rq("ns/a"), "224.0.0.5"), wantErr: ErrForbidden},
			{req: static(rq("ns/a"), "169.254.1.1"), wantErr: ErrForbidden},
			{req: static(rq("ns/a"), "255.255.255.255"), wantErr: ErrForbidden},
			{req: static(rq("ns/a"), "0.0.0.0"), wantErr: ErrForbidden},
			{req: static(rq("ns/a"), "::"), wantErr: ErrForbidden},
			{req: static(rq("ns/a"), "::1"), wantErr: ErrForbidden},
			{req: static(rq("ns/a"), "fe80::1"), wantErr: ErrForbidden},
			{req: static(rq("ns/a"), "ff02::1"), wantErr: ErrForbidden},
			{desc: "node address and VIP", forbid: []string{"10.0.0.0", "10.0.0.2", "192.168.0.1"}},
			{req: static(rq("ns/a"), "192.168.0.1"), wantErr: ErrForbidden},
			{req: static(rq("ns/a"), "10.0.0.2"), wantErr: ErrForbidden},
			{desc: "pool pick skips node addresses", req: rq("ns/b", IPv4), want: "10.0.0.1"},
			{req: rq("ns/c", IPv4), want: "10.0.0.3"},
			{desc: "node address gone", forbid: []string{}},
			{req: rq("ns/d", IPv4), want: "10.0.0.0"},
		}},
		{"restore then assign", []step{
			{config: map[string]string{"cidr-global": "10.0.0.0/29"}},
			{restore: &restored{key: "ns/a", ns: "ns", addrs: "10.0.0.0"}},
			{restore: &restored{key: "ns/b", ns: "ns", addrs: "10.0.0.2,fd00::1"}},
			{restore: &restored{key: "ns/c", ns: "ns", addrs: "192.168.99.9"}, holders: map[string]string{"192.168.99.9": "ns/c"}},
			{req: rq("ns/d", IPv4), want: "10.0.0.1"},
			{req: rq("ns/e", IPv4), want: "10.0.0.3", used: map[string]int{"cidr-global": 4}},
			{desc: "restored keys are idempotent", req: rq("ns/b", IPv4, IPv6), want: "10.0.0.2,fd00::1"},
			{desc: "restore never fails, even on a conflict", restore: &restored{key: "ns/x", ns: "ns", addrs: "10.0.0.1"},
				holders: map[string]string{"10.0.0.1": "ns/d,ns/x"}},
			{desc: "restore replaces", restore: &restored{key: "ns/x", ns: "ns", addrs: "10.0.0.4"},
				holders: map[string]string{"10.0.0.1": "ns/d", "10.0.0.4": "ns/x"}},
			{desc: "restored shareable holders can be joined", restore: &restored{key: "ns/y", ns: "ns", addrs: "10.0.0.5", ports: []string{"tcp/80"}, shareable: true}},
			{config: map[string]string{"cidr-global": "10.0.0.0/29", "allow-share-global": "true"}},
			{req: withPorts(rq("ns/z", IPv4), "tcp/81"), want: "10.0.0.5"},
			{desc: "restore with nothing releases", restore: &restored{key: "ns/a", ns: "ns"}, holders: map[string]string{"10.0.0.0": ""}},
		}},
		{"dual-stack", []step{
			{config: map[string]string{"cidr-global": "10.0.0.0/30,fd00::/127"}},
			{req: rq("ns/a", IPv4, IPv6), want: "10.0.0.0,fd00::"},
			{req: rq("ns/b", IPv6, IPv4), want: "fd00::1,10.0.0.1"},
			{desc: "IPv6 exhausted: nothing is kept", req: rq("ns/c", IPv4, IPv6), wantErr: ErrPoolExhausted,
				holders: map[string]string{"10.0.0.2": ""}},
			{req: rq("ns/d", IPv4), want: "10.0.0.2"},
			{desc: "single to dual keeps the IPv4 address", config: map[string]string{"cidr-global": "10.0.0.0/30,fd00::/126"}},
			{req: rq("ns/d", IPv4, IPv6), want: "10.0.0.2,fd00::2"},
			{desc: "dual to single releases the other family", req: rq("ns/d", IPv4), want: "10.0.0.2",
				holders: map[string]string{"fd00::2": ""}},
			{desc: "duplicate families collapse", req: rq("ns/e", IPv6, IPv6), want: "fd00::2"},
		}},
		{"no pool", []step{
			{config: map[string]string{"cidr-dev": "10.0.0.0/30"}},
			{req: rq("prod/a", IPv4), wantErr: ErrNoPool},
			{req: rq("dev/a", IPv6), wantErr: ErrNoPool},
			{req: rq("dev/b", IPv4, IPv6), wantErr: ErrNoPool, holders: map[string]string{"10.0.0.0": ""}},
			{config: map[string]string{"cidr-global": "fd00::/120"}},
			{desc: "no families and no IPv4 pool: IPv6", req: rq("ns/c"), want: "fd00::"},
		}},
		{"huge ranges are walked lazily", []step{
			{config: map[string]string{"cidr-global": "0.0.0.0/1,::/1", "range-dev": "fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff,2001:db8::/64"}},
			{desc: "0.0.0.0 is skipped", req: rq("ns/a", IPv4), want: "0.0.0.1"},
			{desc: ":: and ::1 are skipped", req: rq("ns/b", IPv6), want: "::2"},
			{desc: "link-local block is jumped over", req: rq("dev/c", IPv6), want: "2001:db8::"},
			{config: map[string]string{"cidr-global": "128.0.0.0/1,8000::/1", "search-order": "desc"}},
			{desc: "broadcast skipped", req: rq("ns/d", IPv4), want: "255.255.255.254"},
			{desc: "multicast block jumped", req: rq("ns/e", IPv6), want: "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
			{config: map[string]string{"cidr-global": "224.0.0.0/3,ff00::/8"}},
			{desc: "only forbidden addresses", req: rq("ns/f", IPv4, IPv6), wantErr: ErrPoolExhausted},
		}},
		{"DHCP pool", []step{
			{config: map[string]string{"cidr-dev": "0.0.0.0/32", "cidr-global": "10.0.0.0/30,fd00::/127", "fallthrough-dev": "true"}},
			{req: rq("dev/a", IPv4), want: "0.0.0.0", holders: map[string]string{"0.0.0.0": ""}},
			{req: rq("dev/b", IPv4, IPv6), want: "0.0.0.0,fd00::"},
			{req: rq("prod/c", IPv4), want: "10.0.0.0"},
		}},
		{"bad requests", []step{
			{config: map[string]string{"cidr-global": "10.0.0.0/30"}},
			{req: &Request{Namespace: "ns", Families: []Family{IPv4}}, wantErr: ErrBadRequest},
			{req: rq("ns/a", Family(5)), wantErr: ErrBadRequest},
			{req: &Request{Key: "ns/a", Namespace: "ns", Requested: []netip.Addr{{}}}, wantErr: ErrBadRequest},
		}},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) { runSteps(t, sc.steps) })
	}
}

// TestAssignIsIncremental proves a run of assignments does not rescan the
// addresses already handed out: the caller's Forbidden func sees each
// candidate about once.
func TestAssignIsIncremental(t *testing.T) {
	for _, desc := range []string{"asc", "desc"} {
		a := NewAllocator()
		cfg, _ := ParseConfig(map[string]string{"cidr-global": "10.0.0.0/16,fd00::/64", "search-order": desc})
		a.SetConfig(cfg)
		calls := 0
		a.SetForbidden(func(netip.Addr) bool { calls++; return false })
		const n = 3000
		for i := range n {
			if _, err := a.Assign(Request{Key: "ns/" + strconv.Itoa(i), Namespace: "ns", Families: []Family{IPv4, IPv6}}); err != nil {
				t.Fatal(err)
			}
		}
		if calls > 2*n+10 {
			t.Errorf("%s: %d candidate checks for %d dual-stack assignments; want about %d", desc, calls, n, 2*n)
		}
	}
}

// checkInternal verifies the allocator's indexes agree with each other.
func checkInternal(t *testing.T, a *Allocator) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for key, h := range a.keys {
		if len(h.addrs) == 0 {
			t.Errorf("key %s holds nothing but is recorded", key)
		}
		for _, x := range h.addrs {
			n++
			if !slices.Contains(a.inUse[x], key) {
				t.Errorf("%s holds %s but is not in the in-use index", key, x)
			}
		}
	}
	m := 0
	used := map[string]int{}
	for x, hs := range a.inUse {
		m += len(hs)
		all := true
		for _, k := range hs {
			if a.keys[k] == nil {
				t.Fatalf("in-use %s lists unknown key %s", x, k)
			}
			all = all && a.keys[k].shareable
		}
		if _, ok := a.shared[x]; ok != all {
			t.Errorf("shared index wrong for %s", x)
		}
		for _, st := range a.states {
			if st.p.contains(x) {
				used[st.p.name]++
			}
		}
	}
	if n != m {
		t.Errorf("keys hold %d addresses, in-use index %d", n, m)
	}
	for name, c := range a.used {
		if used[name] != c {
			t.Errorf("Used(%s) = %d, recount %d", name, c, used[name])
		}
	}
	// Cursor invariant on small ranges: nothing free outside [lo, hi].
	for _, st := range a.states {
		for fi, rr := range st.p.rr {
			for j, r := range rr {
				if rangeSize(r) > 512 {
					continue
				}
				c := st.cur[fi][j]
				for x := r.From(); r.Contains(x); x = x.Next() {
					below := c.loDone || x.Less(c.lo)
					above := c.hiDone || c.hi.Less(x)
					if (below || above) && a.free(st, x) && !BuiltinForbidden(x) {
						t.Errorf("pool %s: %s is free but behind a cursor %+v", st.p.name, x, c)
					}
				}
			}
		}
	}
}

// TestConcurrentUse runs the public methods from several goroutines; run it
// with -race.
func TestConcurrentUse(t *testing.T) {
	a := NewAllocator()
	cfg, _ := ParseConfig(map[string]string{"cidr-global": "10.0.0.0/24,fd00::/120", "allow-share-global": "true"})
	a.SetConfig(cfg)
	done := make(chan struct{})
	for g := range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range 200 {
				key := "ns/" + strconv.Itoa(g) + "-" + strconv.Itoa(i%20)
				switch i % 5 {
				case 0, 1:
					_, _ = a.Assign(Request{Key: key, Namespace: "ns", Families: []Family{IPv4, IPv6}, Ports: []Port{{Port: uint16(i)}}})
				case 2:
					a.Release(key)
				case 3:
					_ = a.Holders(netip.MustParseAddr("10.0.0.1"))
					_ = a.Assigned(key)
					_ = a.Used("cidr-global")
				case 4:
					if g == 0 {
						a.SetConfig(cfg)
					}
					_ = a.UpdatePorts(key, []Port{{Port: 1}})
				}
			}
		}()
	}
	for range 4 {
		<-done
	}
	checkInternal(t, a)
}
