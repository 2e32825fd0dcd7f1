//go:build cluster

package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vip-lb/vip/pkg/testbed"
)

// TestCluster brings the real-cluster lab up once and runs every scenario
// on it: vip installed from deploy/base with locally built images, a
// Deployment behind LoadBalancer Services (externalTrafficPolicy Cluster
// and Local) through kube-proxy in iptables and nftables mode, kube-proxy
// IPVS mode's kube-ipvs0 with and without strict ARP (vip-agent's
// warning), the BGP overlay against a BIRD router, the Helm chart instead
// of the kustomize install, the death of the node that owns the VIP while
// the client probes it; then teardown must leave nothing behind.
func TestCluster(t *testing.T) {
	cfg := Config{Logf: t.Logf}
	cfg, err := cfg.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Dir = filepath.Join(cfg.RepoDir, "_out", "cluster-test")
	if err := cfg.Check(); err != nil {
		if os.Getenv(testbed.EnvRequireAPIServer) == "1" {
			t.Fatalf("%v (failing instead of skipping because %s=1)", err, testbed.EnvRequireAPIServer)
		}
		t.Skip(err)
	}
	if st, err := Load(cfg.Dir); err == nil {
		t.Logf("removing the cluster an earlier run left in %s", cfg.Dir)
		if err := st.Down(); err != nil {
			t.Fatalf("stale cluster: %v", err)
		}
	}
	ctx := context.Background()
	t0 := time.Now()
	c, err := Up(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("FIGURE cluster up (images, network, control plane, %d nodes Ready): %v", len(c.Nodes()), since(t0))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("component logs:\n%s", c.Logs(25))
		}
		t1 := time.Now()
		st := c.State()
		if err := c.Down(); err != nil {
			t.Errorf("teardown: %v", err)
		}
		t.Logf("FIGURE teardown: %v", since(t1))
		checkNothingLeft(t, st)
	})

	t1 := time.Now()
	if err := c.InstallVIP(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("FIGURE vip installed (kubectl apply -k, vip-ccm available, agents ready, nodes untainted): %v", since(t1))
	const ns = "lab"
	if err := c.DeployEcho(ctx, ns, "echo", 3); err != nil {
		t.Fatal(err)
	}
	vip, err := c.ExposeLB(ctx, ns, "echo", "echo", false)
	if err != nil {
		t.Fatal(err)
	}
	local, err := c.ExposeLB(ctx, ns, "echo-local", "echo", true)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("echo at %s (Cluster), echo-local at %s (Local)", vip, local)

	checkService := func(t *testing.T) {
		pods := map[string]bool{}
		ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		var last error
		err := Poll(ctx, 50*time.Millisecond, func() (bool, error) {
			body, err := Get(ctx, vip, 80, 2*time.Second)
			if err != nil {
				last = err
				return false, nil
			}
			a, err := ParseAnswer(body)
			if err != nil {
				return false, err
			}
			pods[a.Pod] = true
			return len(pods) >= 2, nil
		})
		if err != nil {
			t.Fatalf("VIP %s: answers from %d pods (want 2+ through kube-proxy): %v (last error %v)", vip, len(pods), err, last)
		}
		owner, err := c.WaitOwner(ctx, vip)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("echo: VIP %s owned by %s, answered by pods %v", vip, owner, keys(pods))

		var a Answer
		err = Poll(ctx, 50*time.Millisecond, func() (bool, error) {
			body, err := Get(ctx, local, 80, 2*time.Second)
			if err != nil {
				last = err
				return false, nil
			}
			a, err = ParseAnswer(body)
			return err == nil, err
		})
		if err != nil {
			t.Fatalf("VIP %s (Local): %v (last error %v)", local, err, last)
		}
		lowner, err := c.WaitOwner(ctx, local)
		if err != nil {
			t.Fatal(err)
		}
		if a.Client != ClientIP {
			t.Errorf("externalTrafficPolicy Local: the pod saw client %s, want the client's own %s", a.Client, ClientIP)
		}
		if a.Node != lowner {
			t.Errorf("externalTrafficPolicy Local: answered from %s, but %s owns the VIP", a.Node, lowner)
		}
		t.Logf("echo-local: VIP %s owned by %s, pod on %s saw client %s", local, lowner, a.Node, a.Client)
	}

	t.Run("IPTables", checkService)
	if t.Failed() {
		return
	}
	t.Run("NFTables", func(t *testing.T) {
		for _, mode := range []string{KubeProxyNFT, KubeProxyIPT} {
			t0 := time.Now()
			if err := c.SetProxyMode(mode); err != nil {
				t.Fatal(err)
			}
			// Only the new mode's rules: the table or chain of the other is gone.
			if err := c.WaitProxyMode(ctx); err != nil {
				t.Fatal(err)
			}
			t.Logf("kube-proxy restarted in %s mode, its rules in place and the other mode's gone in %v", mode, since(t0))
			checkService(t)
		}
	})
	if t.Failed() {
		return
	}
	t.Run("IPVSARP", func(t *testing.T) { ipvsARP(t, c, ns, "echo", vip) })
	if t.Failed() {
		return
	}
	t.Run("BGP", func(t *testing.T) { bgpMode(t, c) })
	if t.Failed() {
		return
	}
	t.Run("Helm", func(t *testing.T) { helmInstall(t, c, "vip-kustomize-bgp", ns, "echo", vip) })
	if t.Failed() {
		return
	}
	t.Run("Failover", func(t *testing.T) { failover(t, c, ns, "echo", vip) })
}

func keys(m map[string]bool) []string {
	var k []string
	for s := range m {
		k = append(k, s)
	}
	return k
}

// probe is one request of the failover prober.
type probe struct {
	at   time.Time
	ok   bool
	node string
}

// failover kills the node that owns vip (switch port cut, kubelet,
// kube-proxy and containerd SIGKILLed) while the client sends a request
// every 20 ms, and reports when the VIP answered again and when every
// request succeeded again (the dead node's endpoints are dropped only once
// the node is NotReady: --node-monitor-grace-period=20s).
func failover(t *testing.T, c *Cluster, ns, svc string, vip netip.Addr) {
	ctx := context.Background()
	owner, err := c.WaitOwner(ctx, vip)
	if err != nil {
		t.Fatal(err)
	}
	pctx, stop := context.WithCancel(ctx)
	defer stop()
	var mu sync.Mutex
	var ps []probe
	go func() {
		for pctx.Err() == nil {
			at := time.Now()
			body, err := Get(pctx, vip, 80, 300*time.Millisecond)
			p := probe{at: at, ok: err == nil}
			if a, perr := ParseAnswer(body); err == nil && perr == nil {
				p.node = a.Node
			}
			mu.Lock()
			ps = append(ps, p)
			mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	}()
	snap := func() []probe { mu.Lock(); defer mu.Unlock(); return append([]probe(nil), ps...) }
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if err := Poll(wctx, 100*time.Millisecond, func() (bool, error) { return streak(snap()) >= 50, nil }); err != nil {
		t.Fatalf("no baseline of 50 answers before the cut: %v", err)
	}
	cut := time.Now()
	if err := CutPort(owner); err != nil {
		t.Fatal(err)
	}
	if err := c.KillNode(owner); err != nil {
		t.Fatal(err)
	}
	var newOwner string
	err = Poll(wctx, 500*time.Millisecond, func() (bool, error) {
		newOwner, _ = c.Owner(wctx, vip)
		return newOwner != owner && newOwner != "", nil
	})
	if err != nil {
		t.Fatalf("the Lease of %s stayed with %s: %v", svc, owner, err)
	}
	// Until 150 requests in a row (~5 s) succeed after the cut.
	_ = Poll(wctx, 500*time.Millisecond, func() (bool, error) { return streak(probesAfter(snap(), cut)) >= 150, nil })
	stop()
	final := snap()
	first, stable, fails, total := outage(final, cut)
	t.Logf("FIGURE failover through kube-proxy: owner %s killed; Lease to %s; first answer %v after the cut, "+
		"every request answered from %v on (%d of %d requests failed after the cut)", owner, newOwner, first, stable, fails, total)
	if first < 0 || stable < 0 {
		t.Fatalf("the VIP did not recover: first %v stable %v", first, stable)
	}
	if report := os.Getenv("VIP_CLUSTER_REPORT"); report != "" {
		line := fmt.Sprintf("%s failover(owner killed) first_answer=%v all_answered=%v failed=%d/%d\n",
			time.Now().UTC().Format(time.RFC3339), first, stable, fails, total)
		f, err := os.OpenFile(report, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err == nil {
			_, _ = f.WriteString(line)
			f.Close()
		}
	}
}

func probesAfter(ps []probe, t time.Time) []probe {
	for i, p := range ps {
		if p.at.After(t) {
			return ps[i:]
		}
	}
	return nil
}

// streak is the number of successes at the end of ps.
func streak(ps []probe) int {
	n := 0
	for i := len(ps) - 1; i >= 0 && ps[i].ok; i-- {
		n++
	}
	return n
}

// outage returns the time from cut to the first success after it, to the
// start of the final unbroken run of successes, and the failures after cut.
func outage(ps []probe, cut time.Time) (first, stable time.Duration, fails, total int) {
	first, stable = -1, -1
	after := probesAfter(ps, cut)
	total = len(after)
	for _, p := range after {
		if !p.ok {
			fails++
		} else if first < 0 {
			first = p.at.Sub(cut)
		}
	}
	if n := streak(after); n > 0 && n < len(after)+1 {
		stable = after[len(after)-n].at.Sub(cut)
	}
	return first.Round(time.Millisecond), stable.Round(time.Millisecond), fails, total
}

// checkNothingLeft asserts that teardown removed namespaces, processes,
// mounts, cgroups and the folder.
func checkNothingLeft(t *testing.T, st *State) {
	for _, ns := range st.Namespaces {
		if _, err := os.Stat(netnsPath(ns)); err == nil {
			t.Errorf("namespace %s left behind", ns)
		}
	}
	for _, p := range st.Control {
		if p.Alive() {
			t.Errorf("%s (pid %d) left running", p.Name, p.PID)
		}
	}
	for _, n := range st.Nodes {
		for _, p := range []Proc{n.Containerd, n.Kubelet, n.KubeProxy} {
			if p.Alive() {
				t.Errorf("%s %s (pid %d) left running", n.Name, p.Name, p.PID)
			}
		}
		if pids := shimPIDs(n.Socket()); len(pids) > 0 {
			t.Errorf("%s: shims left running: %v", n.Name, pids)
		}
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup/memory", n.Name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: cgroup left behind (%v)", n.Name, err)
		}
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mi), st.Dir) {
		t.Errorf("mounts left under %s", st.Dir)
	}
	if _, err := os.Stat(st.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("folder %s left behind (%v)", st.Dir, err)
	}
}
