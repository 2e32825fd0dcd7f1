package election

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"
)

func TestDecideFence(t *testing.T) {
	timeout := DefaultHeartbeatTimeout
	period := DefaultHeartbeatPeriod
	peer := func(node string, api bool, age time.Duration) probeResult {
		return probeResult{node: node, health: Health{Node: node, APIReachable: api, HeartbeatAgeSeconds: age.Seconds(), LastRenewAgeSeconds: 0.05}}
	}
	renewedAgo := func(p probeResult, d time.Duration) probeResult { p.health.LastRenewAgeSeconds = d.Seconds(); return p }
	gone := func(node string) probeResult { return probeResult{node: node, err: errors.New("timeout")} }
	const unknown = -time.Second
	for _, tc := range []struct {
		name    string
		peers   []probeResult
		fence   bool
		failing time.Duration // how long our renewals have been failing (default 500ms)
	}{
		{"single node", nil, false, 0},
		{"a renewing peer sees us stale for half the timeout: cut off", []probeResult{peer("b", true, 450*time.Millisecond)}, true, 0},
		{"one of several peers is about to take over", []probeResult{peer("b", false, unknown), peer("c", true, 600*time.Millisecond)}, true, 0},
		{"renewing peer sees us fresh: API just came back", []probeResult{peer("b", true, 100*time.Millisecond), peer("c", true, 0)}, false, 0},
		{"renewing peer has no live watch yet", []probeResult{peer("b", true, unknown)}, false, 0},
		{"peers cannot renew either: API down for all", []probeResult{peer("b", false, unknown), peer("c", false, 30*time.Second)}, false, 0},
		{"no peer answers: cut off", []probeResult{gone("b"), gone("c")}, true, 0},
		{"one peer answers and is down too, one unreachable", []probeResult{gone("b"), peer("c", false, unknown)}, false, 0},
		{"etcd just died: the peer's last renewal predates our trouble", []probeResult{renewedAgo(peer("b", true, 450*time.Millisecond), 300*time.Millisecond)}, false, 400 * time.Millisecond},
		{"the peer renewed a period after our trouble began", []probeResult{renewedAgo(peer("b", true, 450*time.Millisecond), 200*time.Millisecond)}, true, 400 * time.Millisecond},
		{"the peer never renewed", []probeResult{renewedAgo(peer("b", true, 450*time.Millisecond), -time.Second)}, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			failing := tc.failing
			if failing == 0 {
				failing = 500 * time.Millisecond
			}
			fence, why := decideFence(timeout, period, failing, tc.peers)
			if fence != tc.fence || why == "" {
				t.Errorf("decideFence = %v (%s), want %v", fence, why, tc.fence)
			}
		})
	}
}

// failingClient makes heartbeat writes fail while fail is set.
func failingClient(fail *atomic.Bool) *fakeAPI {
	c := newFakeClient()
	c.PrependReactor("*", "leases", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if fail.Load() && a.GetNamespace() == DefaultNamespace {
			return true, nil, apierrors.NewServiceUnavailable("cut off")
		}
		return false, nil, nil
	})
	return c
}

func TestFencing(t *testing.T) {
	type probe struct {
		api bool          // the peer renews its own heartbeat
		age time.Duration // how long it has seen ours unchanged (<0: cannot judge)
		err bool
	}
	for _, tc := range []struct {
		name   string
		peers  map[string]probe
		fence  bool
		probed bool
		rounds int   // probe rounds needed before fencing (0 = 1)
		ping   error // the API server ping's outcome (default: a timeout)
	}{
		{name: "cut off while peers renew", peers: map[string]probe{"b": {api: true, age: 350 * time.Millisecond}, "c": {api: true, age: 400 * time.Millisecond}}, fence: true, probed: true},
		{name: "API server down for everyone", peers: map[string]probe{"b": {age: -1}, "c": {age: -1}}, probed: true},
		{name: "API server just back for peers", peers: map[string]probe{"b": {api: true, age: 50 * time.Millisecond}, "c": {api: true, age: -1}}, probed: true},
		{name: "no peer reachable", peers: map[string]probe{"b": {err: true}, "c": {err: true}}, fence: true, probed: true, rounds: cutOffRounds},
		{name: "no peer answers but the API server does (etcd down, peers busy)", peers: map[string]probe{"b": {err: true}, "c": {err: true}},
			probed: true, rounds: cutOffRounds, ping: errNoError},
		{name: "no peer answers, API server refuses connections (it is down, the network works)", peers: map[string]probe{"b": {err: true}, "c": {err: true}},
			probed: true, rounds: cutOffRounds, ping: fmt.Errorf("dial tcp: %w", syscall.ECONNREFUSED)},
		{name: "no peer answers, network unreachable", peers: map[string]probe{"b": {err: true}, "c": {err: true}},
			fence: true, probed: true, rounds: cutOffRounds, ping: fmt.Errorf("dial tcp: %w", syscall.ENETUNREACH)},
		{name: "single node", peers: map[string]probe{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var fail atomic.Bool
			client := failingClient(&fail)
			var probes atomic.Int32
			var pings atomic.Int32
			u := newUnit(t, client, "a", func(o *Options) {
				o.PingAPI = func(context.Context) error {
					pings.Add(1)
					switch tc.ping {
					case nil:
						return context.DeadlineExceeded
					case errNoError:
						return nil
					}
					return tc.ping
				}
				o.Probe = func(ctx context.Context, url string) (Health, error) {
					probes.Add(1)
					for n, p := range tc.peers {
						if url == "http://"+n+"/health?node=a" {
							if p.err {
								return Health{}, errors.New("connection refused")
							}
							return Health{Node: n, APIReachable: p.api, HeartbeatAgeSeconds: p.age.Seconds()}, nil
						}
					}
					return Health{}, errors.New("unknown peer " + url)
				}
			})
			ctx := t.Context()
			u.renew(ctx) // creates the heartbeat
			u.beat("a")
			for n := range tc.peers {
				u.beat(n)
			}
			u.evaluate()
			seed(t, client, svcLease(DefaultNamespace, "kubevip-x", "a", ""), u)
			if !u.Alive("a") {
				t.Fatal("not alive after the first renewal")
			}

			fail.Store(true)
			period, timeout := u.o.HeartbeatPeriod, u.o.HeartbeatTimeout
			// Nothing happens until half the timeout after the last renewal.
			for since := period; since < timeout/2; since += period {
				u.clk.Step(period)
				u.renew(ctx)
				u.checkFence(ctx)
				if probes.Load() != 0 || u.Fenced() {
					t.Fatalf("probed or fenced %v after the last renewal", since)
				}
			}
			u.clk.Step(period)
			u.renew(ctx)
			u.checkFence(ctx)
			if got := probes.Load() > 0; got != tc.probed {
				t.Errorf("probed = %v, want %v", got, tc.probed)
			}
			for r := 1; r < tc.rounds; r++ {
				if u.Fenced() {
					t.Fatalf("fenced after %d silent probe round(s), want %d", r, tc.rounds)
				}
				u.clk.Step(period)
				u.renew(ctx)
				u.checkFence(ctx)
			}
			if u.Fenced() != tc.fence {
				t.Fatalf("Fenced = %v, want %v", u.Fenced(), tc.fence)
			}
			if silent := tc.rounds > 0; silent != (pings.Load() > 0) {
				t.Errorf("API server pinged %d times; want pings only when no peer answers", pings.Load())
			}
			if got := testutil.ToFloat64(u.metrics.fences); got != map[bool]float64{true: 1}[tc.fence] {
				t.Errorf("vip_agent_fences_total = %v", got)
			}
			res, err := u.Ensure(ctx, DefaultNamespace, "kubevip-x", "default/svc-x", []string{"a", "b", "c"})
			if err != nil || res.ShouldAnnounce == tc.fence {
				t.Errorf("Ensure while fenced=%v: %+v, %v", tc.fence, res, err)
			}
			if !tc.fence {
				return
			}
			if evs := u.rec.nodeEvents(); !slices.Contains(evs, transition{"a", false}) {
				t.Errorf("no OnNodeChange(a, false): %v", evs)
			}
			if h := u.health(""); !h.Fenced || h.APIReachable {
				t.Errorf("health = %+v", h)
			}

			// Renewals work again: unfenced once the informer shows the
			// renewed heartbeat, not before.
			fail.Store(false)
			u.clk.Step(period)
			u.renew(ctx)
			if !u.Fenced() {
				t.Fatal("unfenced before the cache caught up")
			}
			l := stored(t, client, DefaultNamespace, HeartbeatPrefix+"a")
			u.onUpsert(nil, l)
			if u.Fenced() || !u.Alive("a") {
				t.Fatalf("still fenced after renewing: fenced %v", u.Fenced())
			}
			if evs := u.rec.nodeEvents(); evs[len(evs)-1] != (transition{"a", true}) {
				t.Errorf("events = %v", evs)
			}
		})
	}
}

// errNoError marks a ping that succeeds in TestFencing's table.
var errNoError = errors.New("no error")

func TestRenewalsFailing(t *testing.T) {
	u := newUnit(t, newFakeClient(), "a", nil)
	now := u.clk.Now()
	period := u.o.HeartbeatPeriod
	for _, tc := range []struct {
		name     string
		failing  time.Time
		inflight time.Time
		want     bool
	}{
		{"renewals work", time.Time{}, time.Time{}, false},
		{"the last one failed", now.Add(-time.Second), time.Time{}, true},
		{"one in progress for less than a period", time.Time{}, now.Add(-period / 2), false},
		{"one in progress for a period: stuck", time.Time{}, now.Add(-period), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u.mu.Lock()
			u.hb.failingSince, u.hb.inflight = tc.failing, tc.inflight
			got := u.renewalsFailing(now)
			u.mu.Unlock()
			if got != tc.want {
				t.Errorf("renewalsFailing = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestReachedAPI(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, true},
		{fmt.Errorf("dial: %w", syscall.ECONNREFUSED), true},
		{context.DeadlineExceeded, false},
		{fmt.Errorf("dial: %w", syscall.EHOSTUNREACH), false},
		{errNoPing, false},
	} {
		if got := reachedAPI(tc.err); got != tc.want {
			t.Errorf("reachedAPI(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestHealthHandler(t *testing.T) {
	u := newUnit(t, newFakeClient(), "a", nil)
	get := func(query string) Health {
		rr := httptest.NewRecorder()
		u.HealthHandler().ServeHTTP(rr, httptest.NewRequest(http.MethodGet, "/health"+query, nil))
		if rr.Code != http.StatusOK || rr.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("status %d, headers %v", rr.Code, rr.Header())
		}
		var h Health
		if err := json.Unmarshal(rr.Body.Bytes(), &h); err != nil {
			t.Fatal(err)
		}
		return h
	}
	if h := get(""); h.Node != "a" || h.APIReachable || h.LastRenewAgeSeconds != -1 || h.HeartbeatAgeSeconds != -1 {
		t.Errorf("before renewing: %+v", h)
	}
	u.renew(t.Context())
	u.beat("a")
	u.beat("b")
	u.clk.Step(300 * time.Millisecond)
	if h := get("?node=b"); !h.APIReachable || h.LastRenewAgeSeconds != 0.3 || !h.LastRenew.Equal(epoch0) || h.HeartbeatAgeSeconds != 0.3 {
		t.Errorf("after renewing: %+v", h)
	}
	if h := get("?node=zz"); h.HeartbeatAgeSeconds != -1 {
		t.Errorf("unknown node: %+v", h)
	}
	// Our own heartbeat has not been seen for a while: our watch may be
	// down, so we cannot judge b.
	u.clk.Step(time.Second)
	if h := get("?node=b"); h.HeartbeatAgeSeconds != -1 {
		t.Errorf("without a live watch: %+v", h)
	}
	rr := httptest.NewRecorder()
	u.HealthHandler().ServeHTTP(rr, httptest.NewRequest(http.MethodPost, "/", nil))
	if rr.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", rr.Code)
	}

	// The default probe reads it over HTTP.
	srv := httptest.NewServer(u.HealthHandler())
	defer srv.Close()
	h, err := httpProbe(time.Second)(t.Context(), srv.URL)
	if err != nil || h.Node != "a" || !h.APIReachable {
		t.Errorf("httpProbe = %+v, %v", h, err)
	}
	if _, err := httpProbe(time.Second)(t.Context(), "http://127.0.0.1:1/health"); err == nil {
		t.Error("probing a dead address succeeded")
	}
}
