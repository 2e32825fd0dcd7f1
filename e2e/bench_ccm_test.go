//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/vip-lb/vip/e2e/ccmtest"
)

// BenchmarkCCMServices measures vip-ccm at its default flags against a real
// API server (a fresh one per size), with the real binary and the RBAC of
// deploy/ccm:
//
//   - burst: N LoadBalancer Services created at once (32 parallel creates)
//     while vip-ccm runs; time from the first create until every one has an
//     address in status (s/all, ms/svc), and how long after the last create
//     returned the last address appeared (s/lag).
//   - catch-up: vip-ccm is killed, every status is cleared, and a new vip-ccm
//     starts with N pending Services; time from its start until all have an
//     address again (ms/svc-catchup). This is vip-ccm's own cost per
//     Service, free of the API server's cost of creating Services.
//   - for N <= 1000 also the API server alone: N Services of a class vip
//     does not serve, created the same way (s/creates-baseline).
//
// Every run checks that no address is held twice. The figures are reported
// as metrics and appended to _out/bench.txt at the repository root (unless
// run by make, whose bench target writes that file from this output).
func BenchmarkCCMServices(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			for range b.N {
				r := benchCCM(b, n)
				per := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(n) }
				b.ReportMetric(r.all.Seconds(), "s/all")
				b.ReportMetric(per(r.all), "ms/svc")
				b.ReportMetric(r.lag.Seconds(), "s/lag")
				b.ReportMetric(per(r.catchup), "ms/svc-catchup")
				b.ReportMetric(float64(r.dups), "duplicates")
				b.ReportMetric(per(r.ccmCPUBurst), "ccm-cpu-ms/svc")
				b.ReportMetric(per(r.ccmCPUCatchup), "ccm-cpu-ms/svc-catchup")
				b.ReportMetric(per(r.apiCPUCatchup), "apiserver-cpu-ms/svc-catchup")
				if r.baseline > 0 {
					b.ReportMetric(r.baseline.Seconds(), "s/creates-baseline")
				}
				base := "not measured"
				if r.baseline > 0 {
					base = fmt.Sprintf("%.2fs", r.baseline.Seconds())
				}
				line := fmt.Sprintf("vip-ccm %5d Services, default flags, %d cpu, load %s: "+
					"burst: all addressed %.2fs after the first create = %.2f ms/Service (last create returned at %.2fs, lag %.3fs; API server alone creating them: %s; CPU per Service: vip-ccm %.2f ms, kube-apiserver %.2f ms); "+
					"catch-up of %d pending after a restart: %.2fs = %.2f ms/Service (CPU per Service: vip-ccm %.2f ms, kube-apiserver %.2f ms); "+
					"%d distinct addresses, %d duplicates",
					n, runtime.NumCPU(), loadAvg(), r.all.Seconds(), per(r.all), r.created.Seconds(), r.lag.Seconds(), base, per(r.ccmCPUBurst), per(r.apiCPUBurst),
					n, r.catchup.Seconds(), per(r.catchup), per(r.ccmCPUCatchup), per(r.apiCPUCatchup), r.distinct, r.dups)
				b.Log(line)
				appendBenchFile(b, line)
				if r.dups > 0 {
					b.Errorf("%d duplicate addresses", r.dups)
				}
			}
		})
	}
}

type benchResult struct {
	created, all, lag, catchup, baseline time.Duration
	distinct, dups                       int
	// CPU time of vip-ccm and of kube-apiserver during the burst and the
	// catch-up: unlike wall-clock time, hardly affected by other load on
	// the machine.
	ccmCPUBurst, apiCPUBurst, ccmCPUCatchup, apiCPUCatchup time.Duration
}

// addressWatcher counts the Services of one namespace that have an address,
// from an informer (polling 10,000 Services would load the API server that
// the CCM is measured against).
type addressWatcher struct {
	mu       sync.Mutex
	n        int
	have     map[string]bool
	done     chan struct{}
	doneOnce sync.Once
	stop     chan struct{}
}

func watchAddresses(cs kubernetes.Interface, ns string, n int) *addressWatcher {
	w := &addressWatcher{n: n, have: map[string]bool{}, done: make(chan struct{}), stop: make(chan struct{})}
	track := func(o any) {
		svc, ok := o.(*v1.Service)
		if !ok {
			return
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		if len(svc.Status.LoadBalancer.Ingress) == 0 {
			delete(w.have, svc.Name)
			return
		}
		w.have[svc.Name] = true
		if len(w.have) == w.n {
			w.doneOnce.Do(func() { close(w.done) })
		}
	}
	f := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(ns))
	inf := f.Core().V1().Services().Informer()
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: track, UpdateFunc: func(_, o any) { track(o) }})
	f.Start(w.stop)
	cache.WaitForCacheSync(w.stop, inf.HasSynced)
	return w
}

func (w *addressWatcher) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.have)
}

func (w *addressWatcher) wait(b *testing.B, timeout time.Duration) {
	b.Helper()
	select {
	case <-w.done:
	case <-time.After(timeout):
		b.Fatalf("only %d of %d Services got an address within %v", w.count(), w.n, timeout)
	}
}

func benchCCM(b *testing.B, n int) benchResult {
	b.StopTimer()
	var r benchResult
	h := ccmtest.New(b)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	// A /16: room for 10,000 Services.
	h.SetPools(ctx, map[string]string{"cidr-global": "10.128.0.0/16"})
	// A cluster has nodes (without them the service controller warns on
	// every Service).
	for i := 1; i <= 3; i++ {
		node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("node-%d", i)}}
		if _, err := h.Admin.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	// The benchmark's own client: no client-side rate limit, and protobuf
	// as controllers use, so the load generator leaves the API server's CPU
	// to the program being measured.
	cfg := h.Env.AdminConfig()
	cfg.QPS, cfg.Burst = 5000, 10000
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	cs := kubernetes.NewForConfigOrDie(cfg)

	ccm := startAndWaitSynced(b, h, "vip-ccm-1") // default flags: leader election on, default QPS and syncs

	if n <= 1000 {
		r.baseline = baselineCreates(b, ctx, cs, n)
	}

	// Burst.
	const ns = "bench"
	if err := ccmtest.EnsureNamespace(ctx, cs, ns); err != nil {
		b.Fatal(err)
	}
	w := watchAddresses(cs, ns, n)
	apiPID := findPID(b, "kube-apiserver", h.Env.Dir())
	ccm0, api0 := procCPU(ccm.PID()), procCPU(apiPID)
	b.StartTimer()
	t0 := time.Now()
	if err := ccmtest.CreateServices(ctx, cs, ns, "svc", 0, n, 32); err != nil {
		b.Fatal(err)
	}
	r.created = time.Since(t0)
	w.wait(b, 50*time.Minute)
	r.all = time.Since(t0)
	r.lag = r.all - r.created
	b.StopTimer()
	r.ccmCPUBurst, r.apiCPUBurst = procCPU(ccm.PID())-ccm0, procCPU(apiPID)-api0
	close(w.stop)
	if ok, err := ccm.Exited(); ok {
		b.Fatalf("vip-ccm exited: %v", err)
	}

	// Catch-up after a restart with every Service pending. The killed
	// leader's Lease is deleted, as a graceful hand-over would release it:
	// the new one should not spend the lease duration waiting.
	ccm.Kill()
	if err := cs.CoordinationV1().Leases("kube-system").Delete(ctx, "vip-ccm", metav1.DeleteOptions{}); err != nil {
		b.Fatal(err)
	}
	clearStatuses(b, ctx, cs, ns)
	w = watchAddresses(cs, ns, n)
	if c := w.count(); c != 0 {
		b.Fatalf("%d Services still have an address after clearing", c)
	}
	api1 := procCPU(apiPID)
	t1 := time.Now()
	ccm2 := h.StartCCM("vip-ccm-2")
	w.wait(b, 30*time.Minute)
	r.catchup = time.Since(t1)
	r.ccmCPUCatchup, r.apiCPUCatchup = procCPU(ccm2.PID()), procCPU(apiPID)-api1
	close(w.stop)

	l, err := cs.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	r.dups = len(ccmtest.Duplicates(l.Items))
	distinct := map[string]bool{}
	for i := range l.Items {
		for _, ip := range ccmtest.IngressIPs(&l.Items[i]) {
			distinct[ip] = true
		}
	}
	r.distinct = len(distinct)
	return r
}

func startAndWaitSynced(b *testing.B, h *ccmtest.Harness, name string) *ccmtest.CCM {
	b.Helper()
	ccm := h.StartCCM(name)
	deadline := time.Now().Add(2 * time.Minute)
	for !ccm.LogContains("Caches are synced") {
		if time.Now().After(deadline) {
			b.Fatalf("vip-ccm did not start:\n%s", ccmtest.Tail(ccm.Log, 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
	return ccm
}

// baselineCreates creates n Services of a class nobody serves (the service
// controller does not even queue them), as the burst does, and deletes them
// again: what the API server alone needs for the creates.
func baselineCreates(b *testing.B, ctx context.Context, cs kubernetes.Interface, n int) time.Duration {
	b.Helper()
	const ns = "baseline"
	if err := ccmtest.EnsureNamespace(ctx, cs, ns); err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	if err := ccmtest.CreateServicesWith(ctx, cs, ns, "svc", 0, n, 32, ccmtest.WithClass("bench.invalid/nobody")); err != nil {
		b.Fatal(err)
	}
	d := time.Since(t0)
	// Delete them again, so that their cluster IPs are freed before the burst.
	l, err := cs.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for _, s := range l.Items {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			_ = cs.CoreV1().Services(ns).Delete(ctx, s.Name, metav1.DeleteOptions{})
		}()
	}
	wg.Wait()
	return d
}

// clearStatuses empties status.loadBalancer of every Service in ns.
func clearStatuses(b *testing.B, ctx context.Context, cs kubernetes.Interface, ns string) {
	b.Helper()
	l, err := cs.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	patch := []byte(`{"status":{"loadBalancer":{"ingress":null}}}`)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	errs := make(chan error, 1)
	for _, s := range l.Items {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if _, err := cs.CoreV1().Services(ns).Patch(ctx, s.Name, types.MergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
				select {
				case errs <- err:
				default:
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
}

// procCPU returns the user+system CPU time of a process (0 if unknown).
func procCPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the parenthesised command name; utime and stime are the
	// 14th and 15th fields of the line, in clock ticks (100 per second).
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// findPID returns the PID of the process whose command line contains both
// strings, or 0.
func findPID(b *testing.B, a, c string) int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cl, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(cl), a) && strings.Contains(string(cl), c) {
			return pid
		}
	}
	b.Logf("no process with %q and %q in its command line", a, c)
	return 0
}

// loadAvg returns the 1-minute load average, as a hint of other load.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}

// appendBenchFile appends line to <repo>/_out/bench.txt. Under make (whose
// bench target tees this output into that file) it does nothing, so the
// lines are not written twice.
func appendBenchFile(tb testing.TB, line string) {
	if os.Getenv("MAKELEVEL") != "" {
		return
	}
	root, err := ccmtest.RepoRoot()
	if err != nil {
		tb.Log(err)
		return
	}
	dir := filepath.Join(root, "_out")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Log(err)
		return
	}
	f, err := os.OpenFile(filepath.Join(dir, "bench.txt"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		tb.Log(err)
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "%s %s\n", time.Now().UTC().Format(time.RFC3339), line)
}
