package dhcp

import (
	"errors"
	"testing"
	"time"
)

// TestMaxClients: Ensure refuses a new key beyond the cap with ErrLimit,
// keeps accepting keys already running, and accepts again once one stops.
func TestMaxClients(t *testing.T) {
	for _, tc := range []struct {
		max, want int
	}{{0, DefaultMaxClients}, {2, 2}} {
		m, err := New(Options{MaxClients: tc.max, Backoff: Backoff{Min: time.Hour, Max: time.Hour}})
		if err != nil {
			t.Skipf("no netlink: %v", err)
		}
		p := Params{Parent: "vip-no-such-if"}
		for i := range tc.want {
			if err := m.Ensure(string(rune('a'+i%26))+string(rune('a'+i/26)), p); err != nil {
				t.Fatalf("cap %d: client %d: %v", tc.max, i, err)
			}
		}
		if err := m.Ensure("over", p); !errors.Is(err, ErrLimit) {
			t.Fatalf("cap %d: client %d: err %v, want ErrLimit", tc.max, tc.want, err)
		}
		if err := m.Ensure("aa", p); err != nil {
			t.Errorf("cap %d: a running key: %v", tc.max, err)
		}
		m.Stop("aa", false)
		if err := m.Ensure("over", p); err != nil {
			t.Errorf("cap %d: after a stop: %v", tc.max, err)
		}
		m.Close()
	}
}
