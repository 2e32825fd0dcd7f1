package ccmapp

import (
	"context"
	"errors"
	"testing"
	"time"

	"k8s.io/client-go/tools/leaderelection/resourcelock"
	clocktesting "k8s.io/utils/clock/testing"
)

func TestReadiness(t *testing.T) {
	const lease = 15 * time.Second
	tests := []struct {
		name    string
		lease   time.Duration // 0: no leader election
		holder  string        // "": Lease never read
		age     time.Duration // since the Lease was read
		running bool
		want    error
	}{
		{name: "no election, starting", want: errNotRunning},
		{name: "no election, synced", running: true},
		{name: "election, Lease never read", lease: lease, want: errNoLease},
		{name: "standby", lease: lease, holder: "other"},
		{name: "standby, Lease read just within the lease duration", lease: lease, holder: "other", age: lease},
		{name: "standby cut off from the API server", lease: lease, holder: "other", age: lease + time.Millisecond, want: errNoLease},
		{name: "leader before its informers synced", lease: lease, holder: "me", want: errNotRunning},
		{name: "leader running", lease: lease, holder: "me", running: true},
		{name: "leader that cannot renew", lease: lease, holder: "me", running: true, age: 2 * lease, want: errNoLease},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := clocktesting.NewFakePassiveClock(time.Unix(1000, 0))
			r := newReadiness(clk, tc.lease, "me")
			if tc.holder != "" {
				r.observe(tc.holder)
			}
			if tc.running {
				r.setRunning()
			}
			clk.SetTime(clk.Now().Add(tc.age))
			if err := r.check(); !errors.Is(err, tc.want) {
				t.Errorf("check() = %v, want %v", err, tc.want)
			}
		})
	}
}

// fakeLock is a Lease lock that fails when told to.
type fakeLock struct {
	resourcelock.Interface
	rec resourcelock.LeaderElectionRecord
	err error
}

func (l *fakeLock) Get(context.Context) (*resourcelock.LeaderElectionRecord, []byte, error) {
	if l.err != nil {
		return nil, nil, l.err
	}
	r := l.rec
	return &r, nil, nil
}

func (l *fakeLock) Create(_ context.Context, r resourcelock.LeaderElectionRecord) error {
	if l.err == nil {
		l.rec = r
	}
	return l.err
}

func (l *fakeLock) Update(_ context.Context, r resourcelock.LeaderElectionRecord) error {
	return l.Create(context.Background(), r)
}

func TestObservedLock(t *testing.T) {
	ctx := context.Background()
	clk := clocktesting.NewFakePassiveClock(time.Unix(1000, 0))
	r := newReadiness(clk, 15*time.Second, "me")
	fl := &fakeLock{err: errors.New("connection refused")}
	l := r.lock(fl)
	if _, _, err := l.Get(ctx); err == nil {
		t.Fatal("Get did not fail")
	}
	if err := r.check(); !errors.Is(err, errNoLease) {
		t.Fatalf("after a failed read: %v", err)
	}
	fl.err = nil
	fl.rec.HolderIdentity = "other"
	if _, _, err := l.Get(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.check(); err != nil {
		t.Fatalf("standby: %v", err)
	}
	if err := l.Update(ctx, resourcelock.LeaderElectionRecord{HolderIdentity: "me"}); err != nil {
		t.Fatal(err)
	}
	if err := r.check(); !errors.Is(err, errNotRunning) {
		t.Fatalf("leader before sync: %v", err)
	}
	r.setRunning()
	if err := r.check(); err != nil {
		t.Fatalf("leader running: %v", err)
	}
}
