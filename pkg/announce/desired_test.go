package announce_test

import (
	"context"
	"errors"
	"maps"
	"net/netip"
	"slices"
	"testing"

	"github.com/vip-lb/vip/pkg/announce"
	"github.com/vip-lb/vip/pkg/announce/fake"
)

var errRefused = errors.New("refused")

// TestDesiredConverges: each Set states an owner's whole set; the
// announcer ends with exactly that set, addresses that move interface are
// withdrawn before they are announced again, a failed announcement is
// reported per address and tried again by the next Set, a failed
// withdrawal still drops the address.
func TestDesiredConverges(t *testing.T) {
	a1, a2, a3 := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("fd00::3")
	type step struct {
		owner     string
		want      map[netip.Addr]string
		fail      map[netip.Addr]bool // announce/withdraw of these fails
		wantCalls []string
		wantBound map[netip.Addr]string
		wantErr   []netip.Addr // addresses in the error
		wantWErr  bool
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"announce, then nothing", []step{
			{owner: "o", want: map[netip.Addr]string{a1: "eth0", a3: ""},
				wantCalls: []string{`announce o 10.0.0.1 "eth0"`, `announce o fd00::3 ""`},
				wantBound: map[netip.Addr]string{a1: "eth0", a3: ""}},
			{owner: "o", want: map[netip.Addr]string{a1: "eth0", a3: ""}, wantBound: map[netip.Addr]string{a1: "eth0", a3: ""}},
			{owner: "o", wantCalls: []string{`withdraw o 10.0.0.1 ""`, `withdraw o fd00::3 ""`}, wantBound: map[netip.Addr]string{}},
		}},
		{"interface move: withdrawn first; an empty interface keeps the current one", []step{
			{owner: "o", want: map[netip.Addr]string{a1: "eth0"}, wantCalls: []string{`announce o 10.0.0.1 "eth0"`},
				wantBound: map[netip.Addr]string{a1: "eth0"}},
			{owner: "o", want: map[netip.Addr]string{a1: ""}, wantBound: map[netip.Addr]string{a1: "eth0"}},
			{owner: "o", want: map[netip.Addr]string{a1: "eth1"},
				wantCalls: []string{`withdraw o 10.0.0.1 ""`, `announce o 10.0.0.1 "eth1"`},
				wantBound: map[netip.Addr]string{a1: "eth1"}},
		}},
		{"owners are separate", []step{
			{owner: "x", want: map[netip.Addr]string{a1: "eth0"}, wantCalls: []string{`announce x 10.0.0.1 "eth0"`},
				wantBound: map[netip.Addr]string{a1: "eth0"}},
			{owner: "y", want: map[netip.Addr]string{a2: "eth0"}, wantCalls: []string{`announce y 10.0.0.2 "eth0"`},
				wantBound: map[netip.Addr]string{a1: "eth0", a2: "eth0"}},
			{owner: "y", wantCalls: []string{`withdraw y 10.0.0.2 ""`}, wantBound: map[netip.Addr]string{a1: "eth0"}},
		}},
		{"a failed announcement is reported and tried again", []step{
			{owner: "o", want: map[netip.Addr]string{a1: "eth0", a2: "eth0"}, fail: map[netip.Addr]bool{a1: true},
				wantCalls: []string{`announce o 10.0.0.1 "eth0"`, `announce o 10.0.0.2 "eth0"`},
				wantBound: map[netip.Addr]string{a2: "eth0"}, wantErr: []netip.Addr{a1}},
			{owner: "o", want: map[netip.Addr]string{a1: "eth0", a2: "eth0"},
				wantCalls: []string{`announce o 10.0.0.1 "eth0"`},
				wantBound: map[netip.Addr]string{a1: "eth0", a2: "eth0"}},
		}},
		{"a failed withdrawal still drops the address", []step{
			{owner: "o", want: map[netip.Addr]string{a1: "eth0"}, wantCalls: []string{`announce o 10.0.0.1 "eth0"`},
				wantBound: map[netip.Addr]string{a1: "eth0"}},
			{owner: "o", fail: map[netip.Addr]bool{a1: true}, wantCalls: []string{`withdraw o 10.0.0.1 ""`},
				wantBound: map[netip.Addr]string{a1: "eth0"}, wantWErr: true},
			// Not asked again: the address is no longer the owner's.
			{owner: "o", wantBound: map[netip.Addr]string{a1: "eth0"}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ann := fake.New()
			d := announce.NewDesired(ann)
			for i, st := range tc.steps {
				ann.Reset()
				ann.Fail = func(_, _ string, vip netip.Addr) error {
					if st.fail[vip] {
						return errRefused
					}
					return nil
				}
				ch, err := d.Set(context.Background(), st.owner, st.want)
				var calls []string
				for _, c := range ann.Calls() {
					calls = append(calls, c.String())
				}
				if !slices.Equal(calls, st.wantCalls) {
					t.Fatalf("step %d: calls %q, want %q", i, calls, st.wantCalls)
				}
				if got := ann.Bound(); !maps.Equal(got, st.wantBound) && (len(got) > 0 || len(st.wantBound) > 0) {
					t.Fatalf("step %d: bound %v, want %v", i, got, st.wantBound)
				}
				var failed []netip.Addr
				var ae *announce.AddrError
				for _, e := range unjoin(err) {
					if !errors.As(e, &ae) || !errors.Is(e, errRefused) {
						t.Fatalf("step %d: error %v is not an AddrError wrapping the cause", i, e)
					}
					failed = append(failed, ae.Addr)
				}
				if !slices.Equal(failed, st.wantErr) {
					t.Fatalf("step %d: failed %v, want %v", i, failed, st.wantErr)
				}
				if (ch.WithdrawErr != nil) != st.wantWErr {
					t.Fatalf("step %d: withdraw error %v, want one: %t", i, ch.WithdrawErr, st.wantWErr)
				}
				if n := len(d.Of(st.owner)); n != len(st.want)-len(st.wantErr) {
					t.Fatalf("step %d: %d addresses recorded for %s, want %d", i, n, st.owner, len(st.want)-len(st.wantErr))
				}
			}
		})
	}
}

func unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
