package fake

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/vip-lb/vip/pkg/announce"
)

func TestRecords(t *testing.T) {
	ctx := context.Background()
	vip := netip.MustParseAddr("10.0.0.1")
	boom := errors.New("boom")
	a := New()
	a.Fail = func(op, owner string, _ netip.Addr) error {
		if op == OpAnnounce && owner == "bad" {
			return boom
		}
		return nil
	}
	_ = a.Announce(ctx, "x", vip, "eth0")
	_ = a.Announce(ctx, "y", vip, "")
	if err := a.Announce(ctx, "bad", vip, ""); !errors.Is(err, boom) {
		t.Fatalf("got %v", err)
	}
	if got := a.Owners(vip); !slices.Equal(got, []string{"x", "y"}) {
		t.Fatalf("owners %v", got)
	}
	_ = a.Withdraw(ctx, "x", vip)
	if got := a.Held(); !slices.Equal(got, []netip.Addr{vip}) {
		t.Fatalf("held %v", got)
	}
	_ = a.Withdraw(ctx, "y", vip)
	if got := a.Held(); len(got) != 0 {
		t.Fatalf("held %v", got)
	}
	_ = a.Close()
	if err := a.Announce(ctx, "x", vip, ""); !errors.Is(err, announce.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	want := []Call{
		{OpAnnounce, "x", vip, "eth0"}, {OpAnnounce, "y", vip, ""}, {OpAnnounce, "bad", vip, ""},
		{OpWithdraw, "x", vip, ""}, {OpWithdraw, "y", vip, ""}, {Op: OpClose}, {OpAnnounce, "x", vip, ""},
	}
	if got := a.Calls(); !slices.Equal(got, want) {
		t.Fatalf("calls\n got %v\nwant %v", got, want)
	}
	a.Reset()
	if len(a.Calls()) != 0 || !a.Closed() {
		t.Fatal("Reset")
	}
}
