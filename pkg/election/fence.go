package election

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"reflect"
	"sort"
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
)

// QueryNode is the health URL query parameter naming the asking node.
const QueryNode = "node"

// Health is what an agent's health endpoint reports; peers whose own
// renewals fail read it to decide whether to fence themselves.
type Health struct {
	// Node is the reporting node.
	Node string `json:"node"`
	// APIReachable is true when its last heartbeat renewal succeeded.
	APIReachable bool `json:"apiReachable"`
	// LastRenew is the wall time of its last successful renewal, for humans.
	LastRenew time.Time `json:"lastRenew,omitzero"`
	// LastRenewAgeSeconds is how long ago, on its own clock, its last
	// successful renewal started; -1 if it never renewed.
	LastRenewAgeSeconds float64 `json:"lastRenewAgeSeconds"`
	// HeartbeatAgeSeconds is how long it has seen the asking node's
	// heartbeat unchanged while its own watch was live: the age it judges
	// staleness by. -1 when it cannot judge (no live watch, node unknown or
	// not named in the query).
	HeartbeatAgeSeconds float64 `json:"heartbeatAgeSeconds"`
	// Fenced is true while it has fenced itself.
	Fenced bool `json:"fenced"`
}

// Fenced reports whether this node has fenced itself because it cannot
// renew its heartbeat while peers can (they are about to take over), or
// because it cannot reach any peer. A fenced node must not announce
// anything, and Ensure never tells it to.
func (e *Elector) Fenced() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.hb.fenced
}

// health is this node's Health now, for the asking node (may be "").
func (e *Elector) health(asking string) Health {
	now := e.o.Clock.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	h := Health{Node: e.self, APIReachable: e.hb.lastAttemptOK && !e.renewalsFailing(now), Fenced: e.hb.fenced,
		LastRenewAgeSeconds: -1, HeartbeatAgeSeconds: -1}
	if e.hb.everOK {
		h.LastRenew = e.hb.lastOK
		h.LastRenewAgeSeconds = now.Sub(e.hb.lastOK).Seconds()
	}
	st := e.nodes[asking]
	live := !e.selfSeen.IsZero() && now.Sub(e.selfSeen) < e.o.HeartbeatTimeout-e.o.HeartbeatPeriod
	if asking != "" && asking != e.self && st != nil && live {
		h.HeartbeatAgeSeconds = now.Sub(later(st.seen, e.epoch)).Seconds()
	}
	return h
}

// HealthHandler serves this node's Health as JSON (query parameter
// QueryNode names the asking node). The agent serves it at the
// HealthAddress it publishes on its heartbeat.
func (e *Elector) HealthHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(e.health(r.URL.Query().Get(QueryNode)))
	})
}

// httpProbe is the default ProbeFunc: GET url and decode a Health.
func httpProbe(timeout time.Duration) ProbeFunc {
	client := &http.Client{Timeout: timeout}
	return func(ctx context.Context, url string) (Health, error) {
		var h Health
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return h, fmt.Errorf("probing %s: %w", url, err)
		}
		resp, err := client.Do(req)
		if err != nil {
			return h, fmt.Errorf("probing %s: %w", url, err)
		}
		defer func() { _ = resp.Body.Close() }()
		if resp.StatusCode != http.StatusOK {
			return h, fmt.Errorf("probing %s: status %s", url, resp.Status)
		}
		if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
			return h, fmt.Errorf("probing %s: decoding: %w", url, err)
		}
		return h, nil
	}
}

// cutOffRounds is how many consecutive probe rounds without any answer
// make a node conclude it is cut off.
const cutOffRounds = 2

// probeTimeout bounds one probe: long enough for a loaded machine to answer
// a tiny HTTP request, short enough that two rounds fit well inside the
// time the successor needs to take over.
func probeTimeout(heartbeatTimeout time.Duration) time.Duration {
	return max(heartbeatTimeout/2, 200*time.Millisecond)
}

// noneAnswered reports whether every probe of a round failed.
func noneAnswered(rs []probeResult) bool {
	for _, r := range rs {
		if r.err == nil {
			return false
		}
	}
	return len(rs) > 0
}

// probeResult is one peer's answer.
type probeResult struct {
	node   string
	health Health
	err    error
}

// decideFence is the fencing rule for a node whose renewals have been
// failing for failingFor, given what its peers said. A peer that renewed
// its own heartbeat at least a period after our trouble began, and has
// watched ours stay unchanged for half the timeout, will take over at the
// full timeout: fence now. (A peer whose last renewal predates our trouble
// proves nothing: when etcd dies, every node's renewal hangs, and each
// peer still reports the success it had just before.) No peer answering
// means we are cut off: fence. Peers that answer but cannot renew either
// (the API server is down for everyone), or that do not see us stale (the
// API server just came back and our next renewal will work), cannot take
// over: keep announcing. No peers at all: keep.
func decideFence(timeout, period, failingFor time.Duration, peers []probeResult) (bool, string) {
	if len(peers) == 0 {
		return false, "no peers to take over"
	}
	reachable := 0
	for _, p := range peers {
		if p.err != nil {
			continue
		}
		reachable++
		age := time.Duration(p.health.HeartbeatAgeSeconds * float64(time.Second))
		renewed := time.Duration(p.health.LastRenewAgeSeconds * float64(time.Second))
		if p.health.APIReachable && p.health.HeartbeatAgeSeconds >= 0 && age >= timeout/2 &&
			p.health.LastRenewAgeSeconds >= 0 && renewed+period <= failingFor {
			return true, fmt.Sprintf("peer %s renewed its heartbeat %v ago, after our renewals began failing %v ago, and has seen ours unchanged for %v: it will take over",
				p.node, renewed.Round(time.Millisecond), failingFor.Round(time.Millisecond), age.Round(time.Millisecond))
		}
	}
	if reachable == 0 {
		return true, "no peer answers: this node is cut off"
	}
	return false, "no reachable peer is about to take over: the API server is down for them too, or just came back"
}

// renewalsFailing reports whether renewals are failing at now: the last
// one failed, or the one in progress has been waiting for longer than a
// period (a cut-off node's renewal only fails at its deadline, well after
// peers have started to see its heartbeat stand still). e.mu must be held.
func (e *Elector) renewalsFailing(now time.Time) bool {
	return !e.failingStart(now).IsZero()
}

// failingStart is when the renewals that are failing at now began (zero
// when they are not failing). e.mu must be held.
func (e *Elector) failingStart(now time.Time) time.Time {
	h := e.hb
	switch {
	case !h.failingSince.IsZero():
		return h.failingSince
	case !h.inflight.IsZero() && now.Sub(h.inflight) >= e.o.HeartbeatPeriod:
		return h.inflight
	}
	return time.Time{}
}

// checkFence fences this node when its renewals have failed for half the
// timeout and decideFence says so; it asks the peers every half period
// until renewals work again or it fences. When no peer answers, the API
// server is asked too: a node that still reaches it is not cut off (the
// API server or etcd is failing, for its peers as well, or the peers are
// too busy to answer), so it keeps announcing.
func (e *Elector) checkFence(ctx context.Context) {
	now := e.o.Clock.Now()
	e.mu.Lock()
	h := e.hb
	failing := e.failingStart(now)
	if e.stopping || !h.everOK || h.fenced || failing.IsZero() ||
		now.Sub(h.lastOK) < e.o.HeartbeatTimeout/2 || now.Sub(h.lastProbe) < e.o.HeartbeatPeriod/2 {
		e.mu.Unlock()
		return
	}
	e.hb.lastProbe = now
	oks := h.oks
	failingFor := now.Sub(failing)
	peers := map[string]string{}
	for node, st := range e.nodes {
		if node != e.self && st.alive && !st.gone {
			peers[node] = st.health
		}
	}
	e.mu.Unlock()

	results := e.probePeers(ctx, peers)
	fence, why := decideFence(e.o.HeartbeatTimeout, e.o.HeartbeatPeriod, failingFor, results)
	silent := fence && noneAnswered(results)
	if silent {
		if err := e.pingAPI(ctx); reachedAPI(err) {
			fence, why = false, "no peer answers, but the API server does: this node is not cut off"
			silent = false
			e.log.V(1).Info("peers silent, API server reachable", "err", err)
		}
	}
	e.mu.Lock()
	if silent {
		// A busy machine can miss one round of probes: being cut off must
		// be seen twice in a row before this node stops announcing.
		e.hb.silentRounds++
		if e.hb.silentRounds < cutOffRounds {
			fence, why = false, fmt.Sprintf("no peer answered %d probe round(s); asking again", e.hb.silentRounds)
		}
	} else {
		e.hb.silentRounds = 0
	}
	e.mu.Unlock()
	if !fence {
		e.log.V(1).Info("heartbeat renewals failing, not fencing", "reason", why)
		return
	}
	e.mu.Lock()
	if e.hb.fenced || e.hb.oks != oks {
		e.mu.Unlock() // already fenced, or a renewal worked meanwhile
		return
	}
	e.hb.fenced, e.hb.recoverRV = true, ""
	lastErr := e.hb.lastErr
	e.mu.Unlock()
	e.metrics.fenced.Set(1)
	e.metrics.fences.Inc()
	e.log.Info("fencing: this node stops announcing", "reason", why, "err", lastErr)
	e.evaluate()
}

// pingAPI asks the API server's /livez/ping (no etcd behind it) within the
// probe timeout.
func (e *Elector) pingAPI(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(ctx, probeTimeout(e.o.HeartbeatTimeout))
	defer cancel()
	return e.o.PingAPI(pctx)
}

// reachedAPI reports whether a ping's outcome shows a working network path
// to the API server: an answer, or a refused connection (the host answered;
// the API server itself is down). A timeout or an unreachable network does
// not.
func reachedAPI(err error) bool {
	return err == nil || errors.Is(err, syscall.ECONNREFUSED)
}

// clientPing is the default PingAPI: GET /livez/ping through the client.
func clientPing(c kubernetes.Interface) func(context.Context) error {
	return func(ctx context.Context) error {
		d := c.Discovery()
		if d == nil {
			return errNoPing
		}
		rc := d.RESTClient()
		if rc == nil || reflect.ValueOf(rc).IsNil() {
			return errNoPing
		}
		return rc.Get().AbsPath("/livez/ping").Do(ctx).Error()
	}
}

// errNoPing: the client cannot reach the API server's health endpoints.
var errNoPing = errors.New("client has no REST client for /livez/ping")

// probePeers asks every peer in parallel, each for at most probeTimeout,
// naming this node in the query. A peer without a usable health URL counts
// as unreachable.
func (e *Elector) probePeers(ctx context.Context, peers map[string]string) []probeResult {
	results := make([]probeResult, 0, len(peers))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for node, raw := range peers {
		wg.Go(func() {
			r := probeResult{node: node}
			if u, err := url.Parse(raw); err != nil || raw == "" {
				r.err = fmt.Errorf("peer %s publishes no usable health URL %q", node, raw)
			} else if a, err := netip.ParseAddr(u.Hostname()); e.o.PeerAddressAllowed != nil && (err != nil || !e.o.PeerAddressAllowed(a)) {
				r.err = fmt.Errorf("peer %s publishes a health URL whose host %q is no node's address", node, u.Hostname())
			} else {
				q := u.Query()
				q.Set(QueryNode, e.self)
				u.RawQuery = q.Encode()
				pctx, cancel := context.WithTimeout(ctx, probeTimeout(e.o.HeartbeatTimeout))
				r.health, r.err = e.o.Probe(pctx, u.String())
				cancel()
			}
			if r.err != nil {
				e.metrics.errors.WithLabelValues(opProbe).Inc()
				e.log.V(1).Info("peer probe failed", "node", node, "err", r.err)
			}
			mu.Lock()
			results = append(results, r)
			mu.Unlock()
		})
	}
	wg.Wait()
	sort.Slice(results, func(i, j int) bool { return results[i].node < results[j].node })
	return results
}
