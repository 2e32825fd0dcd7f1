package bgpconfig

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
)

func TestParsePeerSelectors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      []string
		want    string
		wantErr bool
	}{
		{name: "none", in: nil, want: ""},
		{name: "one", in: []string{"10.0.0.1=rack=a"}, want: "10.0.0.1=rack=a"},
		{name: "semicolons and repeats", in: []string{"10.0.0.2=zone in (x,y); 10.0.0.1=!spine", "[fd00::1]=rack!=b"},
			want: "10.0.0.1=!spine;10.0.0.2=zone in (x,y);fd00::1=rack!=b"},
		{name: "mapped IPv4", in: []string{"::ffff:10.0.0.1=a=b"}, want: "10.0.0.1=a=b"},
		{name: "empty items skipped", in: []string{";;10.0.0.1=a"}, want: "10.0.0.1=a"},
		{name: "no equals", in: []string{"10.0.0.1"}, wantErr: true},
		{name: "bad address", in: []string{"peer=rack=a"}, wantErr: true},
		{name: "empty selector", in: []string{"10.0.0.1= "}, wantErr: true},
		{name: "bad selector", in: []string{"10.0.0.1=rack in a"}, wantErr: true},
		{name: "twice", in: []string{"10.0.0.1=a", "10.0.0.1=b"}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParsePeerSelectors(tc.in)
			if tc.wantErr {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("got %v, %v; want ErrInvalid", got, err)
				}
				return
			}
			if err != nil || got.String() != tc.want {
				t.Fatalf("got %q, %v; want %q", got.String(), err, tc.want)
			}
		})
	}
}

func TestSelect(t *testing.T) {
	a, b, c := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("fd00::3")
	base := Config{AS: 65001, RouterID: netip.MustParseAddr("10.1.0.1"), Peers: []Peer{{Address: a, AS: 1}, {Address: b, AS: 2}, {Address: c, AS: 3}}}
	sel, err := ParsePeerSelectors([]string{"10.0.0.1=rack=a", "fd00::3=rack in (a,b),!spine"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		labels     map[string]string
		peers      []netip.Addr
		deselected []netip.Addr
	}{
		{name: "rack a", labels: map[string]string{"rack": "a"}, peers: []netip.Addr{a, b, c}},
		{name: "rack b", labels: map[string]string{"rack": "b"}, peers: []netip.Addr{b, c}, deselected: []netip.Addr{a}},
		{name: "spine in rack a", labels: map[string]string{"rack": "a", "spine": ""}, peers: []netip.Addr{a, b}, deselected: []netip.Addr{c}},
		{name: "no labels", labels: nil, peers: []netip.Addr{b}, deselected: []netip.Addr{a, c}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := sel.Select(base, tc.labels)
			var addrs []netip.Addr
			for _, p := range got.Peers {
				addrs = append(addrs, p.Address)
			}
			if !slices.Equal(addrs, tc.peers) || !slices.Equal(got.Deselected, tc.deselected) {
				t.Fatalf("peers %v deselected %v; want %v and %v", addrs, got.Deselected, tc.peers, tc.deselected)
			}
			if err := got.Normalize().Validate(); err != nil {
				t.Fatal(err)
			}
			if len(base.Peers) != 3 || base.Deselected != nil {
				t.Fatal("Select changed its input")
			}
		})
	}

	// Only peer b has no selector: with b gone too, no peers and no
	// deselected ones is still an error, some deselected is not.
	none := sel.Select(Config{AS: 1, RouterID: base.RouterID, Peers: []Peer{{Address: a, AS: 1}}}, nil)
	if len(none.Peers) != 0 || none.Normalize().Validate() != nil {
		t.Fatalf("all peers deselected: %+v, %v", none, none.Normalize().Validate())
	}
	if err := (Config{AS: 1, RouterID: base.RouterID}).Normalize().Validate(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("no peers at all: %v", err)
	}
	if got := sel.Unknown(base.Peers[1:2]); !slices.Equal(got, []netip.Addr{a, c}) {
		t.Fatalf("Unknown = %v", got)
	}
	if got := PeerSelectors(nil).Select(base, nil); len(got.Peers) != 3 {
		t.Fatalf("nil selectors dropped peers: %v", got.Peers)
	}
}

func FuzzParsePeerSelectors(f *testing.F) {
	for _, s := range []string{"10.0.0.1=rack=a", "[fd00::1]=zone in (x,y);10.0.0.2=!spine", "=", ";;", "10.0.0.1=a,b=c,d notin (e)"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		sel, err := ParsePeerSelectors([]string{in})
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		// What was accepted prints as entries that parse to the same set.
		again, err := ParsePeerSelectors([]string{sel.String()})
		if err != nil || again.String() != sel.String() {
			t.Fatalf("round trip of %q: %q, %v", sel.String(), again.String(), err)
		}
	})
}
