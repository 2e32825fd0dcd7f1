package ipam

import (
	"errors"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// configFromText turns "key=value" lines into ConfigMap data.
func configFromText(s string) map[string]string {
	data := map[string]string{}
	for line := range strings.SplitSeq(s, "\n") {
		k, v, _ := strings.Cut(line, "=")
		data[k] = v
	}
	return data
}

func FuzzParseConfig(f *testing.F) {
	for _, seed := range []string{
		"cidr-global=192.168.0.220/29,192.168.0.230/29\nrange-global=192.168.0.210-192.168.0.219",
		"cidr-dev=2001::10/127\nrange-dev=fe80::ffff-fe80::1:3\nsearch-order=desc",
		"cidr-global=0.0.0.0/0,::/0\nskip-end-ips-in-cidr=true",
		"range-global=10.0.0.9-10.0.0.1,1-2-3,a-b,10.0.0.1-2001::1\ncidr-=x",
		"allow-share-dev=true\nallow-share-global=maybe\ninterface-dev=eth0\ninterface-global=a/b",
		"cidr-dev=0.0.0.0/32\nallow-static-outside-pools=false",
		"allow-static-outside-pools-dev=true\nallow-dhcp-global=false\nskip-dot0-dot255=no\nfallthrough-dev=true",
		"cidr-x=::ffff:10.0.0.0/120,fe80::1%eth0/64, 10.0.0.0/24 ,,",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, text string) {
		cfg, errs := ParseConfig(configFromText(text))
		for _, err := range errs {
			var ee *EntryError
			if !errors.Is(err, ErrBadEntry) || !errors.As(err, &ee) {
				t.Fatalf("error %v is not an *EntryError", err)
			}
		}
		for _, p := range cfg.pools {
			for fi, rr := range p.rr {
				for i, r := range rr {
					if !r.IsValid() || FamilyOf(r.From()) != families[fi] || FamilyOf(r.To()) != families[fi] {
						t.Fatalf("pool %s: bad range %v in family slot %d", p.name, r, fi)
					}
					if i > 0 && !rr[i-1].To().Less(r.From()) {
						t.Fatalf("pool %s: ranges not sorted and disjoint: %v", p.name, rr)
					}
				}
			}
		}
		for _, info := range cfg.Pools() {
			if !(info.Size > 0) && !info.DHCP {
				t.Fatalf("pool %v has no size", info)
			}
		}
		// Whatever parsed must be usable (a pathological input shows up
		// as the fuzzer's hang report, not as a wall-clock limit here).
		a := NewAllocator()
		a.SetConfig(cfg)
		for _, ns := range []string{"dev", "global", "x"} {
			for i := range 3 {
				_, _ = a.Assign(Request{Key: ns + "/" + strconv.Itoa(i), Namespace: ns, Families: []Family{IPv4, IPv6}})
			}
		}
	})
}

var fuzzConfigs = []map[string]string{
	{"cidr-global": "10.0.0.0/29,fd00::/125", "range-dev": "10.0.0.4-10.0.0.9"},
	{"cidr-dev": "10.0.0.0/30", "range-global": "10.0.0.2-10.0.0.5,fd00::2-fd00::4", "allow-share-global": "true"},
	{"cidr-global": "10.0.0.0/28", "skip-end-ips-in-cidr": "true", "search-order": "desc", "allow-share-dev": "true"},
	{"cidr-dev": "0.0.0.0/32", "cidr-global": "10.0.0.8/30,fd00::/126", "allow-static-outside-pools": "false", "allow-share-global": "true"},
	{"range-global": "10.0.0.0-10.0.0.3,fd00::-fd00::1", "allow-share-global": "true", "search-order": "desc"},
	{"cidr-prod": "10.0.0.0/29", "cidr-global": "10.0.0.8/29", "allow-static-outside-pools": "false", "allow-share-global": "true",
		"skip-dot0-dot255": "false", "fallthrough-dev": "true"},
	{},
}

var fuzzAddrs = parseAddrs("10.0.0.0,10.0.0.1,10.0.0.2,10.0.0.3,10.0.0.4,10.0.0.5,10.0.0.6,10.0.0.7," +
	"10.0.0.8,10.0.0.9,10.0.0.10,10.0.0.15,192.168.0.1,fd00::,fd00::1,fd00::3,fd00::7,127.0.0.1,0.0.0.0,fe80::1")

var fuzzPorts = [][]Port{nil, parsePorts([]string{"tcp/80"}), parsePorts([]string{"tcp/443"}), parsePorts([]string{"udp/80", "tcp/81"})}

var fuzzFamilies = [][]Family{nil, {IPv4}, {IPv6}, {IPv4, IPv6}, {IPv6, IPv4}}

// FuzzAllocator runs random operations and checks after each one that no
// pool pick lands outside the namespace's pools or on a forbidden address,
// that nobody joins an address without everybody's consent and free ports,
// and that the internal indexes agree.
func FuzzAllocator(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 1, 3, 1, 2, 7, 4, 0, 1})
	f.Add([]byte{7, 0, 1, 0, 0, 4, 0, 1, 8, 3, 2, 6, 4, 0, 0, 0, 2, 3})
	f.Add([]byte{5, 0, 5, 3, 1, 0, 6, 1, 2, 0, 3, 7, 7, 0, 3, 2, 4, 11})
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 3*100 {
			ops = ops[:3*100] // a hundred operations are plenty for these pools
		}
		a := NewAllocator()
		cfgIdx := 0
		setCfg := func(i int) {
			cfgIdx = i % len(fuzzConfigs)
			c, errs := ParseConfig(fuzzConfigs[cfgIdx])
			if len(errs) > 0 {
				t.Fatal(errs)
			}
			a.SetConfig(c)
		}
		setCfg(0)
		var forbidden netip.Addr
		restoredKeys := map[string]bool{}
		for len(ops) >= 3 {
			op, k, p := ops[0]%9, ops[1], ops[2]
			ops = ops[3:]
			ns := "dev"
			if k&8 != 0 {
				ns = "prod"
			}
			key := ns + "/" + strconv.Itoa(int(k%8))
			ports := fuzzPorts[int(p>>4)%len(fuzzPorts)]
			before := snapshot(a)
			switch op {
			case 0, 1, 2, 3:
				req := Request{Key: key, Namespace: ns, Ports: ports, Families: fuzzFamilies[int(p)%len(fuzzFamilies)]}
				if k&16 != 0 {
					req.SharingKey, req.ShareWith = "k", []string{"*"}
				}
				if op == 3 {
					req.Requested = []netip.Addr{fuzzAddrs[int(p)%len(fuzzAddrs)]}
				}
				got, err := a.Assign(req)
				if err == nil {
					checkAssign(t, a, before, req, got, forbidden)
				}
			case 4:
				a.Release(key)
				delete(restoredKeys, key)
			case 5:
				a.Restore(Request{Key: key, Namespace: ns, Ports: ports}, []netip.Addr{fuzzAddrs[int(p)%len(fuzzAddrs)]}, p&1 == 1)
				restoredKeys[key] = true
			case 6:
				_ = a.UpdatePorts(key, ports)
			case 7:
				setCfg(int(p))
			case 8:
				forbidden = netip.Addr{}
				if p&1 == 1 {
					forbidden = fuzzAddrs[int(p>>1)%12]
				}
				fb := forbidden
				a.SetForbidden(func(x netip.Addr) bool { return x == fb })
			}
			checkPortsInvariant(t, a, restoredKeys)
			checkInternal(t, a)
			if t.Failed() {
				t.Fatalf("after op %d on %s (config %d)", op, key, cfgIdx)
			}
		}
	})
}

type snap struct {
	holders map[netip.Addr][]string
	keys    map[string]holding
}

func snapshot(a *Allocator) snap {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := snap{holders: map[netip.Addr][]string{}, keys: map[string]holding{}}
	for x, hs := range a.inUse {
		s.holders[x] = slices.Clone(hs)
	}
	for k, h := range a.keys {
		s.keys[k] = *h
	}
	return s
}

func checkAssign(t *testing.T, a *Allocator, before snap, req Request, got []netip.Addr, forbidden netip.Addr) {
	t.Helper()
	a.mu.Lock()
	cfg := a.cfg
	a.mu.Unlock()
	old := before.keys[req.Key]
	for _, x := range got {
		if slices.Contains(old.addrs, x) {
			continue // kept from before, whatever the pools say now
		}
		if x.IsUnspecified() {
			if len(req.Requested) > 0 || !slices.ContainsFunc(cfg.eligible(req.Namespace), func(p *pool) bool { return p.dhcp }) {
				t.Errorf("%s got 0.0.0.0 without a DHCP pool", req.Key)
			}
			continue
		}
		if BuiltinForbidden(x) || x == forbidden {
			t.Errorf("%s got forbidden %s", req.Key, x)
		}
		if _, ok := cfg.PoolOf(req.Namespace, x); !ok && len(req.Requested) == 0 {
			t.Errorf("%s got %s outside the pools of %q", req.Key, x, req.Namespace)
		}
		if len(req.Requested) > 0 && cfg.CheckRequested(req.Namespace, x) != nil {
			t.Errorf("%s got requested %s that its namespace may not have", req.Key, x)
		}
		if b := x.As16(); len(req.Requested) == 0 && x.Is4() && cfg.SkipDot0Dot255() && (b[15] == 0 || b[15] == 255) {
			t.Errorf("%s picked %s", req.Key, x)
		}
		for _, other := range before.holders[x] {
			h := before.keys[other]
			if other == req.Key {
				continue
			}
			if !h.shareable || !cfg.Shareable(req.Namespace) {
				t.Errorf("%s joined %s held by %s without consent", req.Key, x, other)
			}
			if h.ns != req.Namespace && (req.SharingKey == "" || req.SharingKey != h.sharingKey) {
				t.Errorf("%s joined %s held by %s of another namespace without both consents", req.Key, x, other)
			}
			if portsClash(normalizePorts(req.Ports), h.ports) {
				t.Errorf("%s joined %s held by %s with clashing ports", req.Key, x, other)
			}
		}
	}
}

// checkPortsInvariant: holders of one address never clash on ports, unless
// Restore (which records facts without judging them) put one there.
func checkPortsInvariant(t *testing.T, a *Allocator, restoredKeys map[string]bool) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	for x, hs := range a.inUse {
		if len(hs) < 2 || slices.ContainsFunc(hs, func(k string) bool { return restoredKeys[k] }) {
			continue
		}
		for i, k1 := range hs {
			for _, k2 := range hs[i+1:] {
				if portsClash(a.keys[k1].ports, a.keys[k2].ports) {
					t.Errorf("%s and %s share %s with clashing ports", k1, k2, x)
				}
			}
		}
	}
}
