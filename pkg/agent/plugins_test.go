package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	announcefake "github.com/vip-lb/vip/pkg/announce/fake"
	"github.com/vip-lb/vip/pkg/ipam"
)

// annotationSourced marks the Services fakeSource claims: the core must
// learn which Services are sourced from the source alone.
const annotationSourced = "test.vip/sourced"

// fakeSource is an AddressSource that supplies what the test sets and
// records the calls the core makes (consecutive repeats once).
type fakeSource struct {
	mu     sync.Mutex
	supply Supplied
	err    error
	pools  map[string]string
	calls  []string
}

func (s *fakeSource) String() string { return "the fake source" }
func (s *fakeSource) Claims(svc *v1.Service, _ *ipam.Config) bool {
	return svc.Annotations[annotationSourced] == "true"
}
func (s *fakeSource) LeaseName(svc *v1.Service) string {
	return "src-" + svc.Namespace + "-" + svc.Name
}
func (s *fakeSource) Acquire(_ context.Context, r SourceRequest) (Supplied, error) {
	s.record(fmt.Sprintf("acquire %s iface=%s status=%s lease=%s/%s", r.Key, r.Interface, addrStrings(r.Status), r.Namespace, r.Lease))
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.supply, s.err
}
func (s *fakeSource) Release(key string, gone bool) {
	s.record(fmt.Sprintf("release %s gone=%t", key, gone))
}
func (s *fakeSource) SetPools(data map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pools = maps.Clone(data)
}
func (s *fakeSource) record(c string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.calls); n == 0 || s.calls[n-1] != c {
		s.calls = append(s.calls, c)
	}
}
func (s *fakeSource) set(f func(*fakeSource)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

// fakeForwarder is a Forwarder recording what is served, and whether the
// address was still bound when a Service was unserved.
type fakeForwarder struct {
	mu       sync.Mutex
	ann      *announcefake.Announcer
	serving  map[string]string // key -> addresses
	unserved []string          // "<key> bound=<bool>"
	pools    map[string]string
}

func (f *fakeForwarder) Serve(key string, _ *v1.Service, addrs []netip.Addr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.serving[key] = addrStrings(addrs)
}
func (f *fakeForwarder) Unserve(_ context.Context, key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	bound := f.serving[key] != ""
	for _, a := range strings.Split(f.serving[key], ",") {
		if a != "" && !slices.Contains(f.ann.Held(), netip.MustParseAddr(a)) {
			bound = false
		}
	}
	delete(f.serving, key)
	f.unserved = append(f.unserved, fmt.Sprintf("%s bound=%t", key, bound))
}
func (f *fakeForwarder) SetPools(data map[string]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pools = maps.Clone(data)
}

// plugged returns the opts of a world with both fakes.
func plugged(src *fakeSource, fw *fakeForwarder) func(*Options) {
	return func(o *Options) {
		if src != nil {
			o.Source = src
		}
		if fw != nil {
			fw.ann = o.Announcer.(*announcefake.Announcer)
			o.Forwarder = fw
		}
	}
}

// sourced marks a test Service as claimed by fakeSource.
func sourced(s *v1.Service) { annotated(annotationSourced, "true")(s) }

// TestPluginsReadThePools: plug-ins that read the pools ConfigMap get its
// data; the core reads only its own keys.
func TestPluginsReadThePools(t *testing.T) {
	src, fw := &fakeSource{}, &fakeForwarder{serving: map[string]string{}}
	w := newWorld(t, ModeARP, &scriptElector{alive: []string{"n1"}}, plugged(src, fw))
	data := map[string]string{"allow-something-team": "true", "interface-team": "vlan7"}
	w.a.onConfigMap(&v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "kubevip", Namespace: "kube-system"}, Data: data})
	if !maps.Equal(src.pools, data) || !maps.Equal(fw.pools, data) {
		t.Fatalf("source got %v, forwarder got %v", src.pools, fw.pools)
	}
	if !w.a.interfaceAllowed("vlan7") {
		t.Fatal("the core lost its interface-* consent")
	}
}

// TestPluginsLayer2Only: a source or forwarder in BGP mode is refused.
func TestPluginsLayer2Only(t *testing.T) {
	for _, o := range []Options{{Source: &fakeSource{}}, {Forwarder: &fakeForwarder{}}} {
		o.Client, o.NodeName, o.Mode, o.Announcer = fake.NewClientset(), "n1", ModeBGP, announcefake.New()
		if _, err := New(o); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("New(%+v) = %v, want ErrInvalidOptions", o, err)
		}
	}
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within a minute")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
