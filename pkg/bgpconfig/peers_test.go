package bgpconfig

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestParsePeers(t *testing.T) {
	a := netip.MustParseAddr
	tests := []struct {
		name, in string
		want     []Peer
		err      string // substring of the error; "" means success
	}{
		{name: "empty", in: "", want: nil},
		{name: "only commas and spaces", in: " , ,", want: nil},
		{name: "address and AS", in: "10.0.0.1:65000",
			want: []Peer{{Address: a("10.0.0.1"), Port: 179, AS: 65000}}},
		{name: "kube-vip four fields", in: "192.168.0.10:65000::false,192.168.0.11:65000::false",
			want: []Peer{{Address: a("192.168.0.10"), Port: 179, AS: 65000}, {Address: a("192.168.0.11"), Port: 179, AS: 65000}}},
		{name: "password and multihop", in: "10.0.0.1:64512:s3cret:true",
			want: []Peer{{Address: a("10.0.0.1"), Port: 179, AS: 64512, Password: "s3cret", MultihopTTL: 255}}},
		{name: "multihop TTL and port", in: "10.0.0.1:64512::5:1179",
			want: []Peer{{Address: a("10.0.0.1"), Port: 1179, AS: 64512, MultihopTTL: 5}}},
		{name: "empty optional fields", in: "10.0.0.1:64512::::",
			want: []Peer{{Address: a("10.0.0.1"), Port: 179, AS: 64512}}},
		{name: "IPv6 in brackets", in: "[fd00:77::1]:65000:pw:false",
			want: []Peer{{Address: a("fd00:77::1"), Port: 179, AS: 65000, Password: "pw"}}},
		{name: "mixed families, spaces", in: " 10.0.0.1:1 , [fd00::1]:4294967295 ",
			want: []Peer{{Address: a("10.0.0.1"), Port: 179, AS: 1}, {Address: a("fd00::1"), Port: 179, AS: 4294967295}}},
		{name: "multihop 1 means true", in: "10.0.0.1:2::1",
			want: []Peer{{Address: a("10.0.0.1"), Port: 179, AS: 2, MultihopTTL: 255}}},
		{name: "password with brackets", in: "[fd00::2]:7:a]b[c",
			want: []Peer{{Address: a("fd00::2"), Port: 179, AS: 7, Password: "a]b[c"}}},

		{name: "IPv6 without brackets", in: "fd00::1:65000", err: "brackets"},
		{name: "unclosed bracket", in: "[fd00::1:65000", err: "no ']'"},
		{name: "nothing after bracket", in: "[fd00::1]", err: "expected ':'"},
		{name: "IPv4 in brackets", in: "[10.0.0.1]:65000", err: "IPv4 address"},
		{name: "hostname", in: "router.example:65000", err: "address: want an IPv4"},
		{name: "missing AS", in: "10.0.0.1", err: "AS: missing"},
		{name: "empty AS", in: "10.0.0.1::pw", err: "AS: missing"},
		{name: "AS zero", in: "10.0.0.1:0", err: "AS: want"},
		{name: "AS too big", in: "10.0.0.1:4294967296", err: "AS: want"},
		{name: "asdot AS", in: "10.0.0.1:1.10", err: "AS: want"},
		{name: "bad multihop", in: "10.0.0.1:1::maybe", err: "multihop: want"},
		{name: "multihop too big", in: "10.0.0.1:1::256", err: "multihop: want"},
		{name: "bad port", in: "10.0.0.1:1::false:http", err: "port: want"},
		{name: "port zero", in: "10.0.0.1:1::false:0", err: "port: want"},
		{name: "MP-BGP options refused", in: "10.0.0.1:1::false:179:mpbgp_nexthop=fixed", err: "MP-BGP"},
		{name: "BFD refused", in: "10.0.0.1:1::false:179::true;300;300;3", err: "BFD"},
		{name: "too many fields", in: "10.0.0.1:1::false:179:::x", err: "too many"},
		{name: "unspecified address", in: "0.0.0.0:1", err: "not a unicast"},
		{name: "multicast address", in: "[ff02::1]:1", err: "not a unicast"},
		{name: "zoned address", in: "[fe80::1%eth0]:1", err: "zoned"},
		{name: "password too long", in: "10.0.0.1:1:" + strings.Repeat("x", 81), err: "80 bytes"},
		{name: "second entry bad", in: "10.0.0.1:1,10.0.0.2:x", err: "peer 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePeers(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !errors.Is(err, ErrInvalid) {
					t.Fatalf("ParsePeers(%q) = %v, %v; want error containing %q wrapping ErrInvalid", tt.in, got, err, tt.err)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("error spans several lines: %q", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePeers(%q): %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParsePeers(%q)\n got %+v\nwant %+v", tt.in, got, tt.want)
			}
			again, err := ParsePeers(FormatPeers(got))
			if err != nil || !reflect.DeepEqual(again, got) {
				t.Fatalf("round trip of %q through %q: %+v, %v", tt.in, FormatPeers(got), again, err)
			}
		})
	}
}

func TestParsePeersRedactsPassword(t *testing.T) {
	for _, in := range []string{"10.0.0.1:bad:topsecret", "[fd00::1]:bad:topsecret:true"} {
		_, err := ParsePeers(in)
		if err == nil || strings.Contains(err.Error(), "topsecret") {
			t.Errorf("ParsePeers(%q) error %v shows the password", in, err)
		}
	}
}

// FuzzParsePeers checks that ParsePeers never panics, that every peer it
// returns is valid, and that FormatPeers writes what ParsePeers reads back
// to the same peers.
func FuzzParsePeers(f *testing.F) {
	for _, s := range []string{
		"", "10.0.0.1:65000", "192.168.0.10:65000::false,192.168.0.11:65000::false",
		"[fd00::1]:65000:pw:true:1179", "10.0.0.1:1::5", "[::ffff:10.0.0.1]:1", "fd00::1:1",
		"10.0.0.1:1::false:179:mpbgp_nexthop=fixed", "[fe80::1%eth0]:1", " , 10.0.0.2:4294967295:a]b:0",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		peers, err := ParsePeers(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		for _, p := range peers {
			if err := p.validate(); err != nil {
				t.Fatalf("ParsePeers(%q) returned an invalid peer %+v: %v", s, p, err)
			}
			if p.Port == 0 {
				t.Fatalf("ParsePeers(%q) returned port 0", s)
			}
		}
		again, err := ParsePeers(FormatPeers(peers))
		if err != nil {
			t.Fatalf("ParsePeers(FormatPeers(%+v)) = %v", peers, err)
		}
		if len(peers) == 0 {
			peers = nil
		}
		if !reflect.DeepEqual(again, peers) {
			t.Fatalf("round trip of %q:\n got %+v\nwant %+v", s, again, peers)
		}
	})
}
