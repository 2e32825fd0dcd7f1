package ccmapp

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"k8s.io/apiserver/pkg/server/healthz"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/utils/clock"
)

// Reasons /readyz gives when it answers 503.
var (
	errNotRunning = errors.New("this instance leads (or runs without leader election) but its controllers have not started on synced informers yet")
	errNoLease    = errors.New("the leader Lease has not been read or written within the lease duration")
)

// readiness is what vip-ccm's /readyz answers. One rule: 200 when this
// instance can do its part right now —
//
//   - it leads, or runs without leader election, and its controllers run
//     on informers that have synced (the Services, Nodes, pools ConfigMap
//     and agent Leases), or
//   - leader election is on and another instance holds the Lease: a
//     standby, ready to take over,
//
// and, with leader election, it has read or written the Lease within the
// lease duration (it reaches the API server). 503 otherwise: starting,
// syncing after it took the Lease, or cut off from the API server.
//
// Once the controllers run, losing the Lease ends the process (the
// library's rule), so a leader is never demoted to a standby.
type readiness struct {
	clock clock.PassiveClock
	// lease is the leader-election lease duration; 0 without leader
	// election.
	lease time.Duration

	mu       sync.Mutex
	running  bool      // controllers started, informers synced
	observed time.Time // last successful read or write of the Lease
	holder   string    // the Lease's holder then
	self     string    // this instance's identity in the Lease
}

func newReadiness(c clock.PassiveClock, leaseDuration time.Duration, identity string) *readiness {
	return &readiness{clock: c, lease: leaseDuration, self: identity}
}

// setRunning records that the controllers run on synced informers.
func (r *readiness) setRunning() {
	r.mu.Lock()
	r.running = true
	r.mu.Unlock()
}

// observe records the holder of the Lease as just read or written.
func (r *readiness) observe(holder string) {
	r.mu.Lock()
	r.observed, r.holder = r.clock.Now(), holder
	r.mu.Unlock()
}

// check returns nil when ready, else why not.
func (r *readiness) check() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lease == 0 {
		if !r.running {
			return errNotRunning
		}
		return nil
	}
	if r.observed.IsZero() || r.clock.Since(r.observed) > r.lease {
		return errNoLease
	}
	if r.holder == r.self && !r.running {
		return errNotRunning
	}
	return nil
}

// checks are /readyz's checks (each also at /readyz/<name>).
func (r *readiness) checks() []healthz.HealthChecker {
	return []healthz.HealthChecker{healthz.NamedCheck("vip-ccm", func(*http.Request) error { return r.check() })}
}

// lock wraps the leader-election lock so that every successful read or
// write of the Lease is recorded.
func (r *readiness) lock(l resourcelock.Interface) resourcelock.Interface {
	return &observedLock{Interface: l, r: r}
}

type observedLock struct {
	resourcelock.Interface
	r *readiness
}

func (l *observedLock) Get(ctx context.Context) (*resourcelock.LeaderElectionRecord, []byte, error) {
	rec, raw, err := l.Interface.Get(ctx)
	if err == nil && rec != nil {
		l.r.observe(rec.HolderIdentity)
	}
	return rec, raw, err
}

func (l *observedLock) Create(ctx context.Context, ler resourcelock.LeaderElectionRecord) error {
	err := l.Interface.Create(ctx, ler)
	if err == nil {
		l.r.observe(ler.HolderIdentity)
	}
	return err
}

func (l *observedLock) Update(ctx context.Context, ler resourcelock.LeaderElectionRecord) error {
	err := l.Interface.Update(ctx, ler)
	if err == nil {
		l.r.observe(ler.HolderIdentity)
	}
	return err
}
