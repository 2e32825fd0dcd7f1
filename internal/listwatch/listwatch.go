// Package listwatch keeps client-go informers connected through API server
// outages: their list and watch requests retry a failed connection every
// Interval instead of falling into the reflector's exponential backoff;
// and a list or watch forbidden by RBAC is reported once (OnForbidden).
package listwatch

import (
	"net/http"
	"time"
)

// Interval is the pause between attempts of a list or watch request
// that could not reach the API server.
const Interval = 250 * time.Millisecond

// Retry makes informer list and watch requests retry a failed
// connection every Interval until it works or the request's context
// ends, instead of failing at once.
//
// Why: client-go's reflector backs off exponentially after failures (0.8 s
// doubling to 30 s, plus up to 100% jitter), and its backoff is not
// configurable through shared informers. After an API server outage of 30 s
// a vip-agent therefore stayed blind for up to a minute after the server came
// back (no heartbeats, so no failover, and no Service changes), and vip-ccm
// assigned no addresses. With
// the retry here the reflector never sees the outage as a failure and
// resumes within Interval of the server's return. Single-object GETs
// and writes are not retried: their callers handle errors themselves.
func Retry(rt http.RoundTripper) http.RoundTripper {
	return &listWatchRetrier{next: rt}
}

type listWatchRetrier struct{ next http.RoundTripper }

func (r *listWatchRetrier) RoundTrip(req *http.Request) (*http.Response, error) {
	if !isListOrWatch(req) {
		return r.next.RoundTrip(req)
	}
	for {
		resp, err := r.next.RoundTrip(req)
		if err == nil || req.Context().Err() != nil {
			return resp, err
		}
		t := time.NewTimer(Interval)
		select {
		case <-req.Context().Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
	}
}

// isListOrWatch recognises a reflector's requests: GETs with watch, limit or
// resourceVersion parameters (a plain GET of one object has none).
func isListOrWatch(req *http.Request) bool {
	if req.Method != http.MethodGet || req.Body != nil && req.Body != http.NoBody {
		return false
	}
	q := req.URL.Query()
	return q.Has("watch") || q.Has("limit") || q.Has("resourceVersion")
}

// WrappedRoundTripper lets client-go's debugging helpers see through.
func (r *listWatchRetrier) WrappedRoundTripper() http.RoundTripper { return r.next }
