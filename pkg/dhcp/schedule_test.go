package dhcp

import (
	"testing"
	"time"
)

func TestNext(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	lease := timesFrom(t0, 120*time.Second, 0, 0) // T1 60 s, T2 105 s
	b := Backoff{Min: time.Second, Max: 16 * time.Second}
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	for _, tc := range []struct {
		name     string
		lease    Times
		now      time.Time
		failures int
		action   Action
		when     time.Time
	}{
		{"no lease: acquire now", Times{}, at(0), 0, Acquire, at(0)},
		{"no lease after 1 failure", Times{}, at(0), 1, Acquire, at(1)},
		{"no lease after 3 failures", Times{}, at(0), 3, Acquire, at(4)},
		{"no lease backoff capped", Times{}, at(0), 20, Acquire, at(16)},
		{"fresh lease waits for T1", lease, at(1), 0, Renew, at(60)},
		{"at T1 renew now", lease, at(60), 0, Renew, at(60)},
		{"renew failed: retry with backoff", lease, at(61), 2, Renew, at(63)},
		{"renew retries stop at T2", lease, at(100), 5, Rebind, at(105)},
		{"after T2 rebind", lease, at(105), 0, Rebind, at(105)},
		{"rebind failed: retry", lease, at(106), 1, Rebind, at(107)},
		{"rebind retries stop at expiry", lease, at(110), 5, Acquire, at(120)},
		{"expired: acquire", lease, at(120), 0, Acquire, at(120)},
		{"expired with failures: backoff", lease, at(130), 2, Acquire, at(132)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, w := Next(tc.lease, tc.now, tc.failures, b)
			if a != tc.action || !w.Equal(tc.when) {
				t.Errorf("Next(%v) = %v at +%v, want %v at +%v", tc.now.Sub(t0), a, w.Sub(t0), tc.action, tc.when.Sub(t0))
			}
		})
	}
}

func TestTimesFrom(t *testing.T) {
	t0 := time.Unix(0, 0)
	for _, tc := range []struct {
		name                 string
		lease, t1, t2        time.Duration
		wantL, wantT1, want2 time.Duration
	}{
		{"defaults", 100 * time.Second, 0, 0, 100 * time.Second, 50 * time.Second, 87500 * time.Millisecond},
		{"server timers", 100 * time.Second, 30 * time.Second, 60 * time.Second, 100 * time.Second, 30 * time.Second, 60 * time.Second},
		{"t1 beyond lease", 100 * time.Second, 200 * time.Second, 0, 100 * time.Second, 50 * time.Second, 87500 * time.Millisecond},
		{"t2 before t1", 100 * time.Second, 90 * time.Second, 10 * time.Second, 100 * time.Second, 90 * time.Second, 95 * time.Second},
		{"no lease time", 0, 0, 0, time.Hour, 30 * time.Minute, 52*time.Minute + 30*time.Second},
	} {
		got := timesFrom(t0, tc.lease, tc.t1, tc.t2)
		if got.Lease != tc.wantL || got.T1 != tc.wantT1 || got.T2 != tc.want2 {
			t.Errorf("%s: got %+v", tc.name, got)
		}
		if !(got.T1 < got.T2 && got.T2 < got.Lease) {
			t.Errorf("%s: timers out of order: %+v", tc.name, got)
		}
	}
}

// pinnedMAC is MAC("default/web").
const pinnedMAC = "46:67:14:37:fb:6b"

func TestMACAndLinkName(t *testing.T) {
	keys := []string{"default/web", "default/web2", "kube-system/web", "a/b"}
	seenMAC, seenLink := map[string]string{}, map[string]string{}
	for _, k := range keys {
		mac, link := MAC(k), LinkName(k)
		if len(mac) != 6 || mac[0]&0x02 == 0 || mac[0]&0x01 != 0 {
			t.Errorf("MAC(%q) = %v: want locally administered unicast", k, mac)
		}
		if MAC(k).String() != mac.String() || LinkName(k) != link {
			t.Errorf("%q: derivation is not stable", k)
		}
		if len(link) > 15 || !isOurs(LinkPrefix, link) {
			t.Errorf("LinkName(%q) = %q: too long or not recognisable", k, link)
		}
		if o, dup := seenMAC[mac.String()]; dup {
			t.Errorf("MAC(%q) collides with %q", k, o)
		}
		if o, dup := seenLink[link]; dup {
			t.Errorf("LinkName(%q) collides with %q", k, o)
		}
		seenMAC[mac.String()], seenLink[link] = k, k
		if id := ClientID(mac); len(id) != 7 || id[0] != 1 {
			t.Errorf("ClientID(%v) = %x", mac, id)
		}
	}
	// Pinned so that a change of derivation, which would move every
	// Service to a new address after an upgrade, cannot pass unnoticed.
	if got := MAC("default/web").String(); got != pinnedMAC {
		t.Errorf("MAC(default/web) = %s, pinned %s", got, pinnedMAC)
	}
	for _, n := range []string{"eth0", "vipd", "vipdxyz12345678", "vipd0123456789a0"} {
		if isOurs(LinkPrefix, n) {
			t.Errorf("isOurs(%q) = true", n)
		}
	}
}
