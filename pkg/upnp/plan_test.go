package upnp

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"
)

var (
	vipA = netip.MustParseAddr("10.77.0.200")
	vipB = netip.MustParseAddr("10.77.0.201")
	t0   = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
)

func mp(proto string, port uint16, vip netip.Addr) Mapping {
	return Mapping{ID: ID{Protocol: proto, Port: port}, VIP: vip}
}

func hd(owner string, m Mapping, lease, asked time.Duration, renewAt time.Time) Held {
	return Held{Owner: owner, Mapping: m, Lease: lease, Asked: asked, RenewAt: renewAt}
}

func TestPlan(t *testing.T) {
	later := t0.Add(time.Hour)
	tests := []struct {
		name      string
		want      map[string]Want
		held      []Held
		now       time.Time
		ops       []string
		conflicts []string
	}{
		{name: "nothing", now: t0},
		{
			name: "new Service: one add per port, ordered by protocol then port",
			want: map[string]Want{"ns/a": {Lease: time.Hour, Mappings: []Mapping{mp(UDP, 53, vipA), mp(TCP, 443, vipA), mp(TCP, 80, vipA)}}},
			now:  t0,
			ops:  []string{"add ns/a TCP/80→10.77.0.200", "add ns/a TCP/443→10.77.0.200", "add ns/a UDP/53→10.77.0.200"},
		},
		{
			name: "held and not due: nothing",
			want: map[string]Want{"ns/a": {Lease: time.Hour, Mappings: []Mapping{mp(TCP, 80, vipA)}}},
			held: []Held{hd("ns/a", mp(TCP, 80, vipA), time.Hour, time.Hour, t0.Add(30*time.Minute))},
			now:  t0,
		},
		{
			name: "renewal due at RenewAt exactly",
			want: map[string]Want{"ns/a": {Lease: time.Hour, Mappings: []Mapping{mp(TCP, 80, vipA)}}},
			held: []Held{hd("ns/a", mp(TCP, 80, vipA), time.Hour, time.Hour, t0)},
			now:  t0,
			ops:  []string{"renew ns/a TCP/80→10.77.0.200"},
		},
		{
			name: "permanent fallback held (lease 0, asked 1h): renewed, not re-added",
			want: map[string]Want{"ns/a": {Lease: time.Hour, Mappings: []Mapping{mp(TCP, 80, vipA)}}},
			held: []Held{hd("ns/a", mp(TCP, 80, vipA), 0, time.Hour, t0.Add(time.Minute))},
			now:  t0,
		},
		{
			name: "lease changed by the owner: added again",
			want: map[string]Want{"ns/a": {Lease: 2 * time.Hour, Mappings: []Mapping{mp(TCP, 80, vipA)}}},
			held: []Held{hd("ns/a", mp(TCP, 80, vipA), time.Hour, time.Hour, later)},
			now:  t0,
			ops:  []string{"add ns/a TCP/80→10.77.0.200"},
		},
		{
			name: "port removed from the Service: its mapping deleted, the other kept",
			want: map[string]Want{"ns/a": {Lease: time.Hour, Mappings: []Mapping{mp(TCP, 80, vipA)}}},
			held: []Held{hd("ns/a", mp(TCP, 80, vipA), time.Hour, time.Hour, later), hd("ns/a", mp(TCP, 81, vipA), time.Hour, time.Hour, later)},
			now:  t0,
			ops:  []string{"delete ns/a TCP/81→10.77.0.200"},
		},
		{
			name: "Service gone: all its mappings deleted, even when renewal is due",
			held: []Held{hd("ns/a", mp(TCP, 80, vipA), time.Hour, time.Hour, t0), hd("ns/a", mp(UDP, 80, vipA), time.Hour, time.Hour, later)},
			now:  t0,
			ops:  []string{"delete ns/a TCP/80→10.77.0.200", "delete ns/a UDP/80→10.77.0.200"},
		},
		{
			name: "address changed: delete first, then add",
			want: map[string]Want{"ns/a": {Lease: time.Hour, Mappings: []Mapping{mp(TCP, 80, vipB)}}},
			held: []Held{hd("ns/a", mp(TCP, 80, vipA), time.Hour, time.Hour, later)},
			now:  t0,
			ops:  []string{"delete ns/a TCP/80→10.77.0.200", "add ns/a TCP/80→10.77.0.201"},
		},
		{
			name:      "two Services want the same port: smallest key wins when nobody holds it",
			want:      map[string]Want{"ns/b": {Mappings: []Mapping{mp(TCP, 80, vipB)}}, "ns/a": {Mappings: []Mapping{mp(TCP, 80, vipA)}}},
			now:       t0,
			ops:       []string{"add ns/a TCP/80→10.77.0.200"},
			conflicts: []string{"ns/b TCP/80 held by ns/a"},
		},
		{
			name:      "two Services want the same port: the holder keeps it",
			want:      map[string]Want{"ns/b": {Mappings: []Mapping{mp(TCP, 80, vipB)}}, "ns/a": {Mappings: []Mapping{mp(TCP, 80, vipA)}}},
			held:      []Held{hd("ns/b", mp(TCP, 80, vipB), 0, 0, later)},
			now:       t0,
			conflicts: []string{"ns/a TCP/80 held by ns/b"},
		},
		{
			name: "the holder lets go: the other Service gets the port after the delete",
			want: map[string]Want{"ns/a": {Mappings: []Mapping{mp(TCP, 80, vipA)}}},
			held: []Held{hd("ns/b", mp(TCP, 80, vipB), 0, 0, later)},
			now:  t0,
			ops:  []string{"delete ns/b TCP/80→10.77.0.201", "add ns/a TCP/80→10.77.0.200"},
		},
		{
			name: "same port, different protocols: no conflict",
			want: map[string]Want{"ns/b": {Mappings: []Mapping{mp(UDP, 53, vipB)}}, "ns/a": {Mappings: []Mapping{mp(TCP, 53, vipA)}}},
			now:  t0,
			ops:  []string{"add ns/a TCP/53→10.77.0.200", "add ns/b UDP/53→10.77.0.201"},
		},
		{
			name: "one owner lists a port twice: the first entry counts",
			want: map[string]Want{"ns/a": {Mappings: []Mapping{mp(TCP, 80, vipA), mp(TCP, 80, vipB)}}},
			now:  t0,
			ops:  []string{"add ns/a TCP/80→10.77.0.200"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			held := map[ID]Held{}
			for _, h := range tt.held {
				held[h.ID] = h
			}
			heldCopy := fmt.Sprint(held)
			ops, cs := Plan(tt.want, held, tt.now)
			var gotOps, gotCs []string
			for _, o := range ops {
				gotOps = append(gotOps, o.String())
			}
			for _, c := range cs {
				gotCs = append(gotCs, fmt.Sprintf("%s %s held by %s", c.Owner, c.ID, c.HeldBy))
			}
			if !slices.Equal(gotOps, tt.ops) {
				t.Errorf("ops:\n got %q\nwant %q", gotOps, tt.ops)
			}
			if !slices.Equal(gotCs, tt.conflicts) {
				t.Errorf("conflicts:\n got %q\nwant %q", gotCs, tt.conflicts)
			}
			if fmt.Sprint(held) != heldCopy {
				t.Errorf("Plan changed its input")
			}
		})
	}
}

func TestRenewAt(t *testing.T) {
	tests := []struct {
		lease, refresh time.Duration
		want           time.Duration
	}{
		{time.Hour, 30 * time.Minute, 30 * time.Minute},
		{10 * time.Second, time.Hour, 5 * time.Second},
		{0, 30 * time.Minute, 30 * time.Minute}, // permanent: refreshed
	}
	for _, tt := range tests {
		if got := RenewAt(t0, tt.lease, tt.refresh).Sub(t0); got != tt.want {
			t.Errorf("RenewAt(lease %v, refresh %v) = +%v, want +%v", tt.lease, tt.refresh, got, tt.want)
		}
	}
	if got := NextRenewal(nil); !got.IsZero() {
		t.Errorf("NextRenewal(nil) = %v", got)
	}
	held := map[ID]Held{
		{TCP, 1}: {RenewAt: t0.Add(time.Hour)},
		{TCP, 2}: {RenewAt: t0.Add(time.Minute)},
	}
	if got := NextRenewal(held); !got.Equal(t0.Add(time.Minute)) {
		t.Errorf("NextRenewal = %v", got)
	}
}
