package dhcp

import "time"

// Action is the next DHCP exchange a client makes.
type Action int

// The exchanges, named after the RFC 2131 states they lead from.
const (
	// Acquire runs DISCOVER/OFFER/REQUEST/ACK, asking for the previous
	// address when known (INIT).
	Acquire Action = iota
	// Renew extends the lease with the server that granted it (RENEWING).
	Renew
	// Rebind extends the lease with any server (REBINDING).
	Rebind
)

// String names the action for logs and metric labels.
func (a Action) String() string {
	switch a {
	case Renew:
		return "renew"
	case Rebind:
		return "rebind"
	default:
		return "acquire"
	}
}

// Times are the timers of one lease.
type Times struct {
	// Start is when the server acknowledged the lease.
	Start time.Time
	// T1, T2 and Lease are offsets from Start (options 58, 59 and 51).
	T1, T2, Lease time.Duration
}

// timesFrom fills in T1 and T2 when the server did not send them
// (RFC 2131 4.4.5: 0.5 and 0.875 of the lease time) or sent them out of
// order.
func timesFrom(start time.Time, lease, t1, t2 time.Duration) Times {
	if lease <= 0 {
		lease = time.Hour
	}
	if t1 <= 0 || t1 >= lease {
		t1 = lease / 2
	}
	if t2 <= t1 || t2 >= lease {
		t2 = lease * 7 / 8
		if t2 <= t1 {
			t2 = t1 + (lease-t1)/2
		}
	}
	return Times{Start: start, T1: t1, T2: t2, Lease: lease}
}

// Expiry is when the lease ends unless extended.
func (t Times) Expiry() time.Time { return t.Start.Add(t.Lease) }

// Valid reports whether the lease is held at now.
func (t Times) Valid(now time.Time) bool { return !t.Start.IsZero() && now.Before(t.Expiry()) }

// Backoff spaces failed attempts: Min after the first failure, doubling up
// to Max.
type Backoff struct{ Min, Max time.Duration }

// Delay is the pause after the given number of consecutive failures.
func (b Backoff) Delay(failures int) time.Duration {
	if failures <= 0 {
		return 0
	}
	d := b.Min
	for i := 1; i < failures && d < b.Max; i++ {
		d *= 2
	}
	return min(d, b.Max)
}

// Next says which exchange to make and when, given the lease held (zero
// Times for none), the time now and the consecutive failures so far. A lease
// is renewed from T1 and rebound from T2, failed attempts are retried with
// backoff but never later than the next deadline, and once it has expired it
// is acquired afresh.
func Next(t Times, now time.Time, failures int, b Backoff) (Action, time.Time) {
	retry := now.Add(b.Delay(failures))
	if !t.Valid(now) {
		return Acquire, retry
	}
	t1, t2, exp := t.Start.Add(t.T1), t.Start.Add(t.T2), t.Expiry()
	switch {
	case now.Before(t1):
		return Renew, t1
	case now.Before(t2):
		if !retry.Before(t2) {
			return Rebind, t2
		}
		return Renew, retry
	default:
		if !retry.Before(exp) {
			return Acquire, exp
		}
		return Rebind, retry
	}
}
