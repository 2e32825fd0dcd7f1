//go:build cluster

package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/vip-lb/vip/pkg/testbed"
)

// TestKubeadmHA bootstraps a control plane the kube-vip way — vip-agent's
// generated static Pod on the first node (super-admin.conf while `kubeadm
// init` runs), `kubeadm init --control-plane-endpoint <VIP>
// --upload-certs`, two `kubeadm join --control-plane` through the VIP,
// stacked etcd — checks that the client reaches the API on the VIP, then
// kills the first node (port cut, kubelet and containerd killed) while the
// client asks /readyz on the VIP, and measures how long the API was
// unreachable there. Teardown must leave nothing behind.
func TestKubeadmHA(t *testing.T) {
	cfg, err := KubeadmDefaults(Config{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Dir = filepath.Join(cfg.RepoDir, "_out", "kubeadm-test")
	if err := KubeadmCheck(cfg); err != nil {
		if os.Getenv(testbed.EnvRequireAPIServer) == "1" {
			t.Fatalf("%v (failing instead of skipping because %s=1)", err, testbed.EnvRequireAPIServer)
		}
		t.Skip(err)
	}
	if err := KubeadmDown(cfg.Dir); err == nil {
		t.Logf("removed the kubeadm lab an earlier run left in %s", cfg.Dir)
	} else if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale kubeadm lab: %v", err)
	}
	ctx := context.Background()
	t0 := time.Now()
	// VIP_KUBEADM_NO_SUPERADMIN=1: a control run without kube-vip's
	// super-admin.conf step on the first node.
	opts := KubeadmOptions{NoSuperAdmin: os.Getenv("VIP_KUBEADM_NO_SUPERADMIN") == "1"}
	if opts.NoSuperAdmin {
		t.Logf("control run: the first node keeps admin.conf while kubeadm init runs")
	}
	l, err := KubeadmUpWith(ctx, cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("FIGURE kubeadm HA up (images, network, init on %s in %v, joins %v): %v", KubeadmNodeName(1),
		l.InitTime.Round(time.Millisecond), roundAll(l.JoinTimes), since(t0))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", l.Logs(25))
		}
		st, ks := l.State()
		t1 := time.Now()
		if err := l.Down(); err != nil {
			t.Errorf("teardown: %v", err)
		}
		t.Logf("FIGURE kubeadm teardown: %v", since(t1))
		checkNothingLeft(t, st)
		checkKubeadmNothingLeft(t, st, ks)
	})
	nodes := l.Nodes()
	first := nodes[0]
	if opts.NoSuperAdmin {
		t.Logf("vip-agent on %s (admin.conf during init):\n%s", first, l.AgentLog(first, 40))
	}

	// Every node runs exactly what the generator printed (the first one
	// again after the super-admin.conf swap was undone).
	if !strings.Contains(l.Manifest, "path: /etc/kubernetes/admin.conf") || !strings.Contains(l.Manifest, "image: "+AgentImage) {
		t.Fatalf("vip-agent %s printed no static Pod with admin.conf and %s:\n%s", strings.Join(l.GenerateArgs, " "), AgentImage, l.Manifest)
	}
	for _, name := range nodes {
		n, err := l.Node(name)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(n.Host(agentManifest))
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != l.Manifest {
			t.Errorf("%s: %s is not what `vip-agent %s` printed", name, agentManifest, strings.Join(l.GenerateArgs, " "))
		}
	}

	rc, err := l.AdminConfig(first)
	if err != nil {
		t.Fatal(err)
	}
	if want := "https://" + KubeadmVIP + ":6443"; rc.Host != want {
		t.Fatalf("admin.conf's server is %s, want the VIP %s", rc.Host, want)
	}
	hc, err := ReadyzClient(rc)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	var last error
	if err := Poll(wctx, 200*time.Millisecond, func() (bool, error) {
		last = Readyz(wctx, hc, rc.Host, 2*time.Second)
		return last == nil, nil
	}); err != nil {
		t.Fatalf("no /readyz on the VIP from the client: %v (last: %v)", err, last)
	}
	if err := waitControlPlane(wctx, cs, nodes); err != nil {
		t.Fatal(err)
	}
	out, err := l.Kubectl(wctx, first, "get", "nodes", "-o", "wide")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kubectl get nodes through the VIP from the client:\n%s", out)
	var holder string
	if err := Poll(wctx, 200*time.Millisecond, func() (bool, error) {
		holder, err = VIPHolder(wctx, cs)
		return holder != "", nil
	}); err != nil {
		t.Fatalf("nobody holds Lease %s/%s: %v", kubeadmLeaseNS, kubeadmLease, err)
	}
	if holder != first {
		t.Errorf("the VIP is held by %s, not by the first node %s (its agent got it during init)", holder, first)
	}

	t.Run("FirstNodeDies", func(t *testing.T) { kubeadmFailover(t, l, hc, rc.Host, first, nodes[1]) })
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}

// waitControlPlane waits until every node is Ready and runs its four
// control-plane static Pods and vip-agent (their mirror Pods Running and
// ready).
func waitControlPlane(ctx context.Context, cs kubernetes.Interface, nodes []string) error {
	var last string
	err := Poll(ctx, 500*time.Millisecond, func() (bool, error) {
		nl, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		ready := map[string]bool{}
		for _, n := range nl.Items {
			for _, c := range n.Status.Conditions {
				if c.Type == v1.NodeReady && c.Status == v1.ConditionTrue {
					ready[n.Name] = true
				}
			}
		}
		pods, err := cs.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		running := map[string]bool{}
		for _, p := range pods.Items {
			if p.Status.Phase != v1.PodRunning {
				continue
			}
			ok := true
			for _, c := range p.Status.ContainerStatuses {
				ok = ok && c.Ready
			}
			running[p.Name] = ok
		}
		var missing []string
		for _, n := range nodes {
			if !ready[n] {
				missing = append(missing, "node "+n+" Ready")
			}
			for _, c := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "vip-agent"} {
				if !running[c+"-"+n] {
					missing = append(missing, c+"-"+n)
				}
			}
		}
		last = "waiting for " + strings.Join(missing, ", ")
		return len(missing) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("control plane not up: %s: %w", last, err)
	}
	return nil
}

// kubeadmFailover cuts the first node off (switch port down, kubelet and
// containerd SIGKILLed; its static Pods' processes live on, cut off) while
// the client asks /readyz on the VIP every 50 ms (500 ms timeout) with a new connection
// each time, then checks that another node took the Lease and that kubectl works
// through the VIP with that node's admin.conf.
func kubeadmFailover(t *testing.T, l *KubeadmLab, hc *http.Client, server, victim, survivor string) {
	ctx := context.Background()
	pctx, stop := context.WithCancel(ctx)
	defer stop()
	var mu sync.Mutex
	var ps []probe
	var lastErr error
	go func() {
		for pctx.Err() == nil {
			at := time.Now()
			err := Readyz(pctx, hc, server, 500*time.Millisecond)
			mu.Lock()
			ps = append(ps, probe{at: at, ok: err == nil})
			if err != nil && pctx.Err() == nil {
				lastErr = err
			}
			mu.Unlock()
			time.Sleep(50 * time.Millisecond)
		}
	}()
	snap := func() []probe { mu.Lock(); defer mu.Unlock(); return append([]probe(nil), ps...) }
	wctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	if err := Poll(wctx, 100*time.Millisecond, func() (bool, error) { return streak(snap()) >= 40, nil }); err != nil {
		t.Fatalf("no baseline of 40 answers before the cut: %v (last error %v)", err, lastErr)
	}
	leader, err := l.EtcdLeader(wctx)
	if err != nil {
		t.Logf("etcd leader before the cut: %v", err)
	}
	cut := time.Now()
	if err := CutKubeadmPort(victim); err != nil {
		t.Fatal(err)
	}
	if err := l.KillNode(victim); err != nil {
		t.Fatal(err)
	}
	// Until 100 requests in a row (~5 s) succeed after the cut.
	if err := Poll(wctx, 200*time.Millisecond, func() (bool, error) { return streak(probesAfter(snap(), cut)) >= 100, nil }); err != nil {
		mu.Lock()
		e := lastErr
		mu.Unlock()
		t.Fatalf("the API did not come back on the VIP after %s died: %v (last error %v)", victim, err, e)
	}
	stop()
	first, stable, fails, total := outage(snap(), cut)
	cs, err := l.Client(survivor)
	if err != nil {
		t.Fatal(err)
	}
	var holder string
	if err := Poll(wctx, 200*time.Millisecond, func() (bool, error) {
		holder, err = VIPHolder(wctx, cs)
		return holder != "" && holder != victim, nil
	}); err != nil {
		t.Fatalf("the control-plane Lease stayed with %s: %v", holder, err)
	}
	// When the new holder took the Lease (its clock is this machine's).
	taken := time.Duration(-1)
	if le, err := cs.CoordinationV1().Leases(kubeadmLeaseNS).Get(wctx, kubeadmLease, metav1.GetOptions{}); err == nil && le.Spec.AcquireTime != nil {
		taken = le.Spec.AcquireTime.Sub(cut).Round(time.Millisecond)
	}
	t.Logf("FIGURE kubeadm control plane, first node %s killed (etcd leader before: %s): Lease taken by %s %v after the cut; "+
		"/readyz on the VIP answered %v after the cut, every request from %v on (%d of %d requests failed after the cut)",
		victim, leader, holder, taken, first, stable, fails, total)
	if first < 0 || stable < 0 {
		t.Fatalf("the VIP did not recover: first %v stable %v", first, stable)
	}
	if report := os.Getenv("VIP_CLUSTER_REPORT"); report != "" {
		line := fmt.Sprintf("%s kubeadm-failover(first node killed, etcd leader %s) lease_taken=%v first_answer=%v all_answered=%v failed=%d/%d\n",
			time.Now().UTC().Format(time.RFC3339), leader, taken, first, stable, fails, total)
		if f, err := os.OpenFile(report, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644); err == nil {
			_, _ = f.WriteString(line)
			f.Close()
		}
	}
	out, err := l.Kubectl(wctx, survivor, "get", "nodes")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kubectl get nodes through the VIP after %s died (admin.conf of %s):\n%s", victim, survivor, out)
}

// checkKubeadmNothingLeft asserts that the kubeadm nodes' processes, shims,
// cgroups and host folders are gone.
func checkKubeadmNothingLeft(t *testing.T, st *State, ks *KubeadmState) {
	for _, n := range ks.Nodes {
		for _, p := range []Proc{n.Holder, n.Containerd, n.Kubelet} {
			if p.Alive() {
				t.Errorf("%s %s (pid %d) left running", n.Name, p.Name, p.PID)
			}
		}
		if pids := shimPIDs(n.Socket()); len(pids) > 0 {
			t.Errorf("%s: shims left running: %v", n.Name, pids)
		}
		if pids := cgroupPIDs(n.Name); len(pids) > 0 {
			t.Errorf("%s: processes left in its cgroup: %v", n.Name, pids)
		}
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup/memory", n.Name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: cgroup left behind (%v)", n.Name, err)
		}
	}
	for _, p := range st.HostPaths {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("host folder %s left behind (%v)", p, err)
		}
	}
}
