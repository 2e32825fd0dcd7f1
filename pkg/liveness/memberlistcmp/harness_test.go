package memberlistcmp

import (
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// cluster is N members of one kind on 127.0.0.1, each with its own port.
type cluster interface {
	// kill stops member i abruptly: its socket closes, nothing is said.
	kill(t *testing.T, i int)
	// restart brings member i back under the same name and port.
	restart(t *testing.T, i int)
	// converged reports whether every running member sees every running
	// member alive.
	converged() bool
	// traffic is what every member sent so far.
	traffic() traffic
	// suspicions counts suspicions so far (see the implementations).
	suspicions() uint64
	// streamCost is the periodic TCP state exchange: bytes of one exchange
	// (measured now) and how often each member starts one; 0 if none.
	streamCost(t *testing.T) (bytes uint64, every time.Duration)
	// settings describes the configuration, for the report.
	settings() string
	// status tells how far from converged the cluster is.
	status() string
	close()
}

// traffic counts what the members sent (on loopback every datagram sent
// is received once, so received is the same).
type traffic struct {
	udpPackets, udpBytes, tcpBytes, tcpConns uint64
}

func (a traffic) minus(b traffic) traffic {
	return traffic{a.udpPackets - b.udpPackets, a.udpBytes - b.udpBytes, a.tcpBytes - b.tcpBytes, a.tcpConns - b.tcpConns}
}

// recorder collects, from every member's callbacks, when each member
// marked another one dead.
type recorder struct {
	names []string

	mu        sync.Mutex
	down      map[string]bool          // members stopped on purpose
	victim    string                   // the member stopped in this run
	t0        time.Time                // when it was stopped
	detected  map[string]time.Duration // observer -> time until it marked victim dead
	done      chan struct{}            // closed when every running member marked victim dead
	falseDead []string                 // "observer: subject" for subjects that were running
}

func newRecorder(names []string) *recorder {
	return &recorder{names: names, down: map[string]bool{}}
}

// markDead records that observer now believes subject dead.
func (r *recorder) markDead(observer, subject string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down[observer] {
		return
	}
	if !r.down[subject] {
		r.falseDead = append(r.falseDead, observer+": "+subject)
		return
	}
	if subject != r.victim || r.detected == nil {
		return
	}
	if _, ok := r.detected[observer]; ok {
		return
	}
	r.detected[observer] = time.Since(r.t0)
	if len(r.detected) == len(r.names)-len(r.down) {
		close(r.done)
	}
}

// arm starts a run: victim is about to be stopped.
func (r *recorder) arm(victim string) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.victim, r.t0, r.detected, r.done = victim, time.Now(), map[string]time.Duration{}, make(chan struct{})
	r.down[victim] = true
	return r.done
}

// revive ends a run: the victim runs again.
func (r *recorder) revive(victim string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.down, victim)
	r.victim, r.detected = "", nil
}

// brief lists the first few of a long list.
func brief(l []string) string {
	if len(l) > 8 {
		return fmt.Sprintf("%v… (%d distinct)", l[:8], len(distinct(l)))
	}
	return fmt.Sprint(l)
}

func distinct(l []string) []string {
	c := slices.Clone(l)
	slices.Sort(c)
	return slices.Compact(c)
}

func (r *recorder) falseDeaths() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.falseDead)
}

func (r *recorder) detections() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	var d []time.Duration
	for _, v := range r.detected {
		d = append(d, v)
	}
	slices.Sort(d)
	return d
}

// cpuTime is this process's user+system CPU time (the same utime+stime
// as /proc/self/stat, in microseconds instead of clock ticks).
func cpuTime(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "?"
	}
	for l := range strings.SplitSeq(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

// hog keeps n goroutines spinning until stop is closed.
func hog(n int, stop <-chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			x := 0
			for {
				select {
				case <-stop:
					return
				default:
				}
				for i := range 1 << 16 {
					x += i
				}
			}
		})
	}
	return &wg
}

func envDuration(t *testing.T, key string, def time.Duration) time.Duration {
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s: %v", key, err)
	}
	return d
}

func envInts(t *testing.T, key, def string) []int {
	v := os.Getenv(key)
	if v == "" {
		v = def
	}
	var out []int
	for _, f := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' }) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 3 {
			t.Fatalf("%s: %q is not a member count of 3 or more", key, f)
		}
		out = append(out, n)
	}
	return out
}

func envList(key, def string) []string {
	v := os.Getenv(key)
	if v == "" {
		v = def
	}
	return strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' })
}

// report appends lines to VIP_BENCH_MEMBERLIST_OUT (if set) and the test log.
type report struct {
	t    *testing.T
	path string
}

func (r report) printf(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	r.t.Log(line)
	if r.path == "" {
		return
	}
	f, err := os.OpenFile(r.path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		r.t.Errorf("report: %v", err)
		return
	}
	defer f.Close()
	if _, err := fmt.Fprintln(f, line); err != nil {
		r.t.Errorf("report: %v", err)
	}
}

// TestMemberlistSideBySide measures each kind of cluster at each size:
// at rest (CPU, traffic, members marked dead that were not stopped),
// optionally under a CPU hog, then detection of abruptly stopped members.
func TestMemberlistSideBySide(t *testing.T) {
	if os.Getenv("VIP_BENCH_MEMBERLIST") != "1" {
		t.Skip("measurement harness (minutes of CPU): run with VIP_BENCH_MEMBERLIST=1 or `make bench-memberlist`")
	}
	sizes := envInts(t, "VIP_BENCH_MEMBERLIST_NODES", "3 20 50 100")
	modes := envList("VIP_BENCH_MEMBERLIST_MODES", "default tuned liveness")
	rest := envDuration(t, "VIP_BENCH_MEMBERLIST_REST", 20*time.Second)
	hogFor := envDuration(t, "VIP_BENCH_MEMBERLIST_HOG", 0)
	runs := 5
	if v := os.Getenv("VIP_BENCH_MEMBERLIST_RUNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("VIP_BENCH_MEMBERLIST_RUNS: %q", v)
		}
		runs = n
	}
	out := report{t: t, path: os.Getenv("VIP_BENCH_MEMBERLIST_OUT")}
	out.printf("# memberlist side by side, %s UTC: one process on 127.0.0.1, %d cores (%s), GOMAXPROCS %d, %s, load average %s",
		time.Now().UTC().Format("2006-01-02 15:04"), runtime.NumCPU(), cpuModel(), runtime.GOMAXPROCS(0), runtime.Version(), loadavg())
	for _, n := range sizes {
		for _, mode := range modes {
			t.Run(fmt.Sprintf("%s-%d", mode, n), func(t *testing.T) {
				out := report{t: t, path: out.path}
				k := runs
				if n >= 100 {
					k = min(k, 3) // a few only: N=100 is the costly size
				}
				measure(t, out, mode, n, rest, hogFor, k)
			})
		}
	}
}

func newCluster(t *testing.T, mode string, names []string, rec *recorder) cluster {
	switch mode {
	case "default", "tuned":
		return newMemberlistCluster(t, mode, names, rec)
	case "liveness":
		return newLivenessCluster(t, names, rec)
	}
	t.Fatalf("unknown mode %q (default, tuned, liveness)", mode)
	return nil
}

func measure(t *testing.T, out report, mode string, n int, rest, hogFor time.Duration, runs int) {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("node-%03d", i)
	}
	rec := newRecorder(names)
	c := newCluster(t, mode, names, rec)
	defer c.close()
	if !eventually(3*time.Minute, c.converged) {
		out.printf("%-8s N=%-3d did not converge: after 3 min not every member saw every member alive: %s", mode, n, c.status())
		t.FailNow()
	}
	// Let the joins settle (pkg/liveness judges a new member after 2 s).
	time.Sleep(5 * time.Second)

	load0 := loadavg()
	st, hasStalls := c.(interface{ stalls() (behind, ticks uint64) })
	var behind0, ticks0 uint64
	if hasStalls {
		behind0, ticks0 = st.stalls()
	}
	tr0, cpu0, t0, susp0 := c.traffic(), cpuTime(t), time.Now(), c.suspicions()
	time.Sleep(rest)
	tr, cpu, el := c.traffic().minus(tr0), cpuTime(t)-cpu0, time.Since(t0)
	susp := c.suspicions() - susp0
	falseRest := rec.falseDeaths()
	per := func(v uint64) float64 { return float64(v) / el.Seconds() / float64(n) }
	// memberlist's periodic push-pull over TCP starts 30-60 s after a
	// member starts: rarely inside the window. Its cost is measured apart.
	xb, every := c.streamCost(t)
	tcp := 0.0
	if every > 0 {
		tcp = float64(xb) / every.Seconds()
	}
	out.printf("%-8s N=%-3d settings: %s", mode, n, c.settings())
	out.printf("%-8s N=%-3d at rest %v (load %s): CPU %.2f %% of a core per member (%.1f %% in all), UDP %.1f packets/s and %.0f B/s sent per member, TCP in the window %.0f B/s per member; push-pull %d B per exchange every %v per member = %.0f B/s per member; suspicions %d, marked dead while running %d",
		mode, n, el.Round(time.Second), load0, 100*cpu.Seconds()/el.Seconds()/float64(n), 100*cpu.Seconds()/el.Seconds(),
		per(tr.udpPackets), per(tr.udpBytes), per(tr.tcpBytes), xb, every, tcp, susp, len(falseRest))
	if hasStalls {
		b, k := st.stalls()
		out.printf("%-8s N=%-3d at rest: ticks at which a monitor was behind (late, or datagrams unread) and judged nobody: %d of %d",
			mode, n, b-behind0, k-ticks0)
	}
	if len(falseRest) > 0 {
		t.Errorf("%s N=%d: members marked dead at rest although running: %s", mode, n, brief(falseRest))
	}

	if hogFor > 0 {
		stop := make(chan struct{})
		susp0, false0, cpu0, t0 := c.suspicions(), len(rec.falseDeaths()), cpuTime(t), time.Now()
		wg := hog(runtime.GOMAXPROCS(0), stop)
		time.Sleep(hogFor)
		close(stop)
		wg.Wait()
		el := time.Since(t0)
		f := rec.falseDeaths()[false0:]
		// Reported, not asserted: this is what is being measured.
		out.printf("%-8s N=%-3d CPU hog (%d spinning goroutines) %v: process CPU %.0f %% of a core, suspicions %d, marked dead while running %d %s",
			mode, n, runtime.GOMAXPROCS(0), el.Round(time.Second), 100*(cpuTime(t)-cpu0).Seconds()/el.Seconds(),
			c.suspicions()-susp0, len(f), brief(f))
		if len(f) > 0 {
			// Let the cluster heal before the detection runs.
			waitFor(t, 3*time.Minute, "every member alive again after the hog", c.converged)
			time.Sleep(5 * time.Second)
		}
	}

	rng := rand.New(rand.NewPCG(uint64(n), 17))
	var medians, lasts []time.Duration
	falseBefore := len(rec.falseDeaths())
	for run := range runs {
		i := rng.IntN(n)
		done := rec.arm(names[i])
		c.kill(t, i)
		select {
		case <-done:
		case <-time.After(5 * time.Minute):
			t.Fatalf("%s N=%d run %d: %s stopped 5 min ago and only %d of %d members marked it dead",
				mode, n, run, names[i], len(rec.detections()), n-1)
		}
		d := rec.detections()
		med, last := d[(len(d)-1)/2], d[len(d)-1]
		medians, lasts = append(medians, med), append(lasts, last)
		out.printf("%-8s N=%-3d run %d: %s stopped; marked dead by the first member after %v, the median member %v, the last %v",
			mode, n, run, names[i], d[0].Round(time.Millisecond), med.Round(time.Millisecond), last.Round(time.Millisecond))
		c.restart(t, i)
		rec.revive(names[i])
		waitFor(t, 3*time.Minute, "the restarted member alive everywhere", c.converged)
		time.Sleep(3 * time.Second)
	}
	slices.Sort(medians)
	slices.Sort(lasts)
	fDet := rec.falseDeaths()[falseBefore:]
	out.printf("%-8s N=%-3d detection over %d runs: median member median %v worst %v; every member: median %v worst %v; running members marked dead meanwhile: %d %s",
		mode, n, runs, medians[(len(medians)-1)/2].Round(time.Millisecond), medians[len(medians)-1].Round(time.Millisecond),
		lasts[(len(lasts)-1)/2].Round(time.Millisecond), lasts[len(lasts)-1].Round(time.Millisecond), len(fDet), brief(fDet))
	out.printf("| %s | %d | %s | %.2f %% | %.1f | %.0f | %.0f | %v / %v | %v / %v | %d | %d | %d |",
		mode, n, load0, 100*cpu.Seconds()/el.Seconds()/float64(n), per(tr.udpPackets), per(tr.udpBytes), tcp,
		medians[(len(medians)-1)/2].Round(10*time.Millisecond), medians[len(medians)-1].Round(10*time.Millisecond),
		lasts[(len(lasts)-1)/2].Round(10*time.Millisecond), lasts[len(lasts)-1].Round(10*time.Millisecond), len(falseRest), susp, len(fDet))
}

func eventually(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not after %v: %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
