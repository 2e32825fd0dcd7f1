package docs_test

import (
	"regexp"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes/fake"

	announcefake "github.com/vip-lb/vip/pkg/announce/fake"
	"github.com/vip-lb/vip/pkg/ccm"
	"github.com/vip-lb/vip/pkg/controlplane"
	"github.com/vip-lb/vip/pkg/election"
)

// describingRegisterer records the names every registered collector
// describes, as a scrape would expose them.
type describingRegisterer struct {
	mu    sync.Mutex
	names map[string]bool
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (r *describingRegisterer) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 64)
	go func() { c.Describe(ch); close(ch) }()
	r.mu.Lock()
	defer r.mu.Unlock()
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			r.names[m[1]] = true
		}
	}
	return nil
}

func (r *describingRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		_ = r.Register(c)
	}
}

func (r *describingRegisterer) Unregister(prometheus.Collector) bool { return true }

// TestRegistriesMatchDocs builds the components whose constructors need no
// network or privileges with a registerer that records what they register,
// and requires every metric to be documented and found by the source scan
// that TestMetricsDocumented relies on.
func TestRegistriesMatchDocs(t *testing.T) {
	reg := &describingRegisterer{names: map[string]bool{}}
	if _, err := ccm.New(ccm.DefaultOptions(), reg); err != nil {
		t.Fatal(err)
	}
	client := fake.NewClientset()
	if _, err := election.New(election.Options{Client: client, NodeName: "n1", Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := controlplane.New(controlplane.Options{Client: client, Identity: "n1", Address: "10.0.0.1",
		Announcer: announcefake.New(), Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if len(reg.names) < 15 {
		t.Fatalf("only %d metrics registered: %v", len(reg.names), reg.names)
	}
	t.Logf("%d metrics registered by vip-ccm, the elector and the control-plane controller", len(reg.names))
	scanned := metricsInCode(t)
	doc := tableRows(t, "metrics.md")
	for n := range reg.names {
		if _, ok := scanned[n]; !ok {
			t.Errorf("%s is registered but the source scan misses it", n)
		}
		if _, ok := doc[n]; !ok {
			t.Errorf("%s is registered but not in docs/metrics.md", n)
		}
	}
}
