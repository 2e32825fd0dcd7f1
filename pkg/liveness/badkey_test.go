package liveness

import (
	"errors"
	"net/netip"
	"testing"
	"time"
)

// Datagrams signed with another key are ignored and never count as
// liveness; those from a member's link address are counted apart (BadKey:
// most likely that member holds another key), others are not.
func TestBadKeyFromMemberCounted(t *testing.T) {
	c := newCluster(t, 3)
	c.run(time.Second)
	m := c.mons["node1"]
	src := c.addrs["node2"]
	before := m.Stats()
	other := []byte("another cluster's key, 32 bytes.")
	for i := range 3 {
		b, _ := Packet{Kind: KindBeat, From: "node2", Incarnation: 1 << 62, Seq: uint64(i + 1), SentUnixMilli: c.clk.Now().UnixMilli()}.Marshal(other)
		if err := m.Receive(b, src); !errors.Is(err, ErrBadMAC) {
			t.Fatalf("datagram with another key: %v", err)
		}
	}
	b, _ := Packet{Kind: KindBeat, From: "node2", Incarnation: 1 << 62, Seq: 9, SentUnixMilli: c.clk.Now().UnixMilli()}.Marshal(other)
	if err := m.Receive(b, netip.MustParseAddrPort("10.9.9.9:7947")); !errors.Is(err, ErrBadMAC) {
		t.Fatalf("from a stranger: %v", err)
	}
	st := m.Stats()
	if got := st.BadKey - before.BadKey; got != 3 {
		t.Errorf("BadKey counted %d, want 3 (the stranger's datagram does not count)", got)
	}
	if got := st.Rejected - before.Rejected; got != 4 {
		t.Errorf("Rejected counted %d, want 4", got)
	}
	if st.Received != before.Received {
		t.Error("a datagram with another key was accepted")
	}
}
