package lab

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestOutage(t *testing.T) {
	t0 := time.Unix(1000, 0)
	fail := errors.New("timeout")
	seq := func(spec ...string) []ProbeResult {
		var rs []ProbeResult
		for i, s := range spec {
			r := ProbeResult{At: t0.Add(time.Duration(i) * 10 * time.Millisecond), Node: s}
			if s == "" {
				r.Err = fail
			}
			rs = append(rs, r)
		}
		return rs
	}
	for _, tc := range []struct {
		name  string
		rs    []ProbeResult
		want  time.Duration
		fails int
		ok    bool
	}{
		{"port cut", seq("a", "a", "", "", "", "b", "b"), 30 * time.Millisecond, 3, true},
		{"clean hand-off", seq("a", "a", "b", "b"), 0, 0, true},
		{"early glitch ignored", seq("a", "", "a", "a", "", "", "b"), 20 * time.Millisecond, 2, true},
		{"later glitch ignored", seq("a", "", "b", "", "b"), 10 * time.Millisecond, 1, true},
		{"never reached", seq("a", "", ""), 0, 0, false},
	} {
		got, fails, ok := Outage(tc.rs, "b")
		if got != tc.want || fails != tc.fails || ok != tc.ok {
			t.Errorf("%s: Outage = %v, %d, %v; want %v, %d, %v", tc.name, got, fails, ok, tc.want, tc.fails, tc.ok)
		}
	}
}

func TestParseLabelsAndSum(t *testing.T) {
	in := `# HELP x
apiserver_request_total{code="200",resource="leases",verb="PUT"} 10
apiserver_request_total{code="201",resource="services",verb="POST"} 5
apiserver_request_total{code="200",resource="leases",verb="GET"} 7
apiserver_request_total_other 3
`
	got, err := sumMetric(stringsReader(in), "apiserver_request_total", func(l map[string]string) bool { return l["verb"] != "GET" })
	if err != nil || got != 15 {
		t.Fatalf("sum = %v, %v; want 15", got, err)
	}
}

func stringsReader(s string) *strings.Reader { return strings.NewReader(s) }
