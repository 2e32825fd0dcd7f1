//go:build e2e

// Package compat replays kube-vip's documented DaemonSet installs with only
// the image swapped: kube-vip's ServiceAccount and RBAC (the generator's
// system:kube-vip-role, and the Chinese operator notes' copy of it), the
// DaemonSet's environment word for word and the container argument
// `manager`, each agent in its node's network namespace with the node's
// host name (as a hostNetwork Pod sees it). The lab's vip-ccm gives the
// addresses; the client namespace must reach the Service, or the agent
// must print the documented refusal.
package compat

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vip-lb/vip/e2e/lab"
)

// kubeVipRBAC is `kube-vip manifest rbac` (kube-vip's generator, the file
// the blog applies from kube-vip.io/manifests/rbac.yaml): no configmaps
// and no events rule.
const kubeVipRBAC = `apiVersion: v1
kind: ServiceAccount
metadata:
  name: kube-vip
  namespace: kube-system
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  annotations:
    rbac.authorization.kubernetes.io/autoupdate: "true"
  name: system:kube-vip-role
rules:
  - apiGroups: [""]
    resources: ["services", "endpoints"]
    verbs: ["list","get","watch", "update"]
  - apiGroups: [""]
    resources: ["nodes"]
    verbs: ["list","get","watch", "update", "patch"]
  - apiGroups: ["coordination.k8s.io"]
    resources: ["leases"]
    verbs: ["list", "get", "watch", "update", "create"]
  - apiGroups: ["discovery.k8s.io"]
    resources: ["endpointslices"]
    verbs: ["list","get","watch", "update"]
  - apiGroups: [""]
    resources: ["pods"]
    verbs: ["list"]
---
kind: ClusterRoleBinding
apiVersion: rbac.authorization.k8s.io/v1
metadata:
  name: system:kube-vip-binding
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:kube-vip-role
subjects:
- kind: ServiceAccount
  name: kube-vip
  namespace: kube-system
`

// notesRBAC is the operator notes' (seed 004) RBAC, word for word: no
// endpointslices, configmaps or events rule.
const notesRBAC = `apiVersion: v1
kind: ServiceAccount
metadata:
  name: kube-vip
  namespace: kube-system

---

apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  annotations:
    rbac.authorization.kubernetes.io/autoupdate: "true"
  name: system:kube-vip-role
rules:
  - apiGroups: [""]
    resources: ["services", "services/status", "nodes", "endpoints"]
    verbs: ["list","get","watch", "update"]
  - apiGroups: ["coordination.k8s.io"]
    resources: ["leases"]
    verbs: ["list", "get", "watch", "update", "create"]

---

kind: ClusterRoleBinding
apiVersion: rbac.authorization.k8s.io/v1
metadata:
  name: system:kube-vip-binding
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:kube-vip-role
subjects:
- kind: ServiceAccount
  name: kube-vip
  namespace: kube-system
`

// notesARPEnv is the notes' ARP DaemonSet environment, word for word.
var notesARPEnv = []string{
	"vip_interface=eth0", "vip_cidr=32", "cp_enable=false", "cp_namespace=kube-system", "svc_enable=true",
	"vip_arp=true", "vip_leaderelection=true", "svc_election=false",
}

// blogARPEnv is the blog's generated ARP DaemonSet environment (kube-vip
// manifest daemonset --inCluster --services --arp --leaderElection).
var blogARPEnv = []string{"vip_arp=true", "svc_enable=true", "vip_leaderelection=true"}

// startKubeVipAgents replaces the lab's agents by ones run as kube-vip's
// DaemonSet runs them: args [manager], env, the kube-vip ServiceAccount's
// token (standing in for the in-cluster mount) and the node's host name.
func startKubeVipAgents(t *testing.T, ctx context.Context, l *lab.Lab, rbac string, env []string) map[string]string {
	t.Helper()
	kc := kubeconfigFor(t, ctx, l, rbac, "kube-vip")
	logs := map[string]string{}
	for _, n := range l.Nodes {
		logs[n.Name] = startKubeVipAgent(t, l, n, kc, env)
	}
	return logs
}

// startKubeVipAgent replaces node n's lab agent by one run as kube-vip's
// DaemonSet runs it, with kubeconfig kc, and returns its log.
func startKubeVipAgent(t *testing.T, l *lab.Lab, n *lab.Node, kc string, env []string) string {
	t.Helper()
	if err := l.StopAgent(n.Name, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(l.Dir, n.Name+"-kube-vip-env.log")
	f, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	// A hostNetwork Pod has its node's host name; the state file
	// (vip's own flag) keeps the host's /run clean.
	cmd := exec.Command("ip", "netns", "exec", n.NS, "unshare", "--uts", "sh", "-c",
		`hostname "$0" && exec "$@"`, n.Name, filepath.Join(l.Opts.BinDir, "vip-agent"), "manager", "--state-file", n.State)
	cmd.Env = append([]string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "KUBECONFIG=" + kc}, env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopOnCleanup(t, cmd, f)
	return log
}

func waitLog(ctx context.Context, path string, want ...string) (string, error) {
	var last string
	err := lab.Poll(ctx, 100*time.Millisecond, func() (bool, error) {
		b, _ := os.ReadFile(path)
		last = string(b)
		for _, w := range want {
			if !strings.Contains(last, w) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		if len(last) > 3000 {
			last = last[len(last)-3000:]
		}
		return last, fmt.Errorf("log %s never had %q: %w\n%s", path, want, err, last)
	}
	return last, nil
}

func newLab(t *testing.T) (context.Context, *lab.Lab) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	l, err := lab.New(ctx, lab.Options{Nodes: 2, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(l.Logs(40))
		}
		_ = l.Close()
	})
	return ctx, l
}

// TestKubeVipRBACServes: kube-vip's generator RBAC lacks configmaps: the
// agents say so (naming the rule and deploy/agent/rbac.yaml), go on
// without interface-* keys, and the Service answers from the client.
func TestKubeVipRBACServes(t *testing.T) {
	ctx, l := newLab(t)
	logs := startKubeVipAgents(t, ctx, l, kubeVipRBAC, blogARPEnv)
	for node, log := range logs {
		if _, err := waitLog(ctx, log, "missing RBAC rule", "resources [configmaps]", "deploy/agent/rbac.yaml", "informers synced"); err != nil {
			t.Fatalf("%s: %v", node, err)
		}
	}
	addr := newService(t, ctx, l, "default", "hello")
	node := answeringNode(t, ctx, l, addr)
	t.Logf("%s answers from %s under kube-vip's own ServiceAccount and RBAC", addr, node)
}

// TestNotesRBACRefusal: the notes' RBAC has no endpointslices rule: each
// agent prints the documented refusal (the rule, the file granting it),
// never becomes ready, and so is never made a candidate. It has no events
// rule either, which the agent names as well.
func TestNotesRBACRefusal(t *testing.T) {
	ctx, l := newLab(t)
	logs := startKubeVipAgents(t, ctx, l, notesRBAC, notesARPEnv)
	for node, log := range logs {
		out, err := waitLog(ctx, log, "missing RBAC rule", "resources [endpointslices]", "deploy/agent/rbac.yaml")
		if err != nil {
			t.Fatalf("%s: %v", node, err)
		}
		n := 0 // the agent's own lines (the event sink may repeat the message when Events are forbidden too)
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, "permissions.go") && strings.Contains(line, "resources [endpointslices]") {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s: the missing rule is logged %d times; want once:\n%s", node, n, out)
		}
		// Their RBAC has no events rule either: the Warning above cannot be
		// recorded, and the agent names that rule too.
		if _, err := waitLog(ctx, log, "missing RBAC rule", "resources [events]", "Warnings are dropped"); err != nil {
			t.Errorf("%s: %v", node, err)
		}
	}
}

// kubeconfigFor applies rbac and returns a kubeconfig holding a token of
// the kube-system ServiceAccount sa (standing in for the in-cluster mount).
func kubeconfigFor(t *testing.T, ctx context.Context, l *lab.Lab, rbac, sa string) string {
	t.Helper()
	if err := l.Env.ApplyYAML(ctx, []byte(rbac)); err != nil {
		t.Fatal(err)
	}
	tok, err := l.Env.ServiceAccountToken(ctx, "kube-system", sa)
	if err != nil {
		t.Fatal(err)
	}
	kc := filepath.Join(l.Dir, sa+".kubeconfig")
	if err := l.Env.Kubeconfig(kc, tok); err != nil {
		t.Fatal(err)
	}
	return kc
}

// newService creates Service ns/name (LoadBalancer, the lab's port) and
// returns the first address vip-ccm writes into its status.
func newService(t *testing.T, ctx context.Context, l *lab.Lab, ns, name string, opts ...lab.ServiceOption) netip.Addr {
	t.Helper()
	if _, err := l.CreateService(ctx, ns, name, opts...); err != nil {
		t.Fatal(err)
	}
	addrs, err := l.WaitAddress(ctx, ns, name)
	if err != nil {
		t.Fatal(err)
	}
	return addrs[0]
}

// answeringNode waits until addr answers the lab's client on the Service
// port and returns the node that answered.
func answeringNode(t *testing.T, ctx context.Context, l *lab.Lab, addr netip.Addr) string {
	t.Helper()
	node, err := l.WaitServedBy(ctx, addr, lab.ServicePort, func(s string) bool { return s != "" })
	if err != nil {
		t.Fatal(err)
	}
	return node
}

// withEnv returns a copy of a document's environment base with extra
// variables after it (base itself is never changed).
func withEnv(base []string, extra ...string) []string {
	return append(append([]string{}, base...), extra...)
}

// logTailsOnFailure logs the last 4000 bytes of each node's log when the
// test has failed.
func logTailsOnFailure(t *testing.T, logs map[string]string) {
	t.Helper()
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for node, log := range logs {
			b, _ := os.ReadFile(log)
			if len(b) > 4000 {
				b = b[len(b)-4000:]
			}
			t.Logf("---- %s\n%s", node, b)
		}
	})
}

// waitReachedFrom routes vip via the router r in the client namespace
// behind it (r.Ext) and polls until that client reaches vip; it returns the
// node that answered.
func waitReachedFrom(t *testing.T, ctx context.Context, l *lab.Lab, r *lab.Router, vip netip.Addr) string {
	t.Helper()
	if _, err := l.Exec(ctx, r.Ext, "ip", "route", "add", vip.String()+"/32", "via", r.WAN.String()); err != nil {
		t.Fatal(err)
	}
	var node string
	var last error
	if err := lab.Poll(ctx, 50*time.Millisecond, func() (bool, error) {
		node, last = l.GetFrom(ctx, r.Ext, vip, lab.ServicePort, 500*time.Millisecond)
		return last == nil && node != "", nil
	}); err != nil {
		route, _ := l.Exec(ctx, r.NS, "ip", "route")
		t.Fatalf("%s never answered through the router: %v (last error %v)\nrouter routes:\n%s", vip, err, last, route)
	}
	return node
}

// stopOnCleanup stops the started cmd when the test ends: SIGTERM, SIGKILL
// after 20 s, by PID; then closes its log file f.
func stopOnCleanup(t *testing.T, cmd *exec.Cmd, f *os.File) {
	pid := cmd.Process.Pid
	t.Cleanup(func() {
		_ = syscall.Kill(pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(pid, syscall.SIGKILL)
			<-done
		}
		_ = f.Close()
	})
}

// TestNotesRBACNodeIsNoCandidate: the black hole of kube-vip's RBAC. One
// node runs the notes' DaemonSet under their RBAC (no endpointslices
// rule), the other vip's agent under vip's RBAC. The first names the
// missing rule and never becomes ready, so it is never a candidate: every
// Service, including the ones whose preferred node it would be, is bound
// on and answered by the second node.
func TestNotesRBACNodeIsNoCandidate(t *testing.T) {
	ctx, l := newLab(t)
	bad, good := l.Nodes[0], l.Nodes[1]
	kc := kubeconfigFor(t, ctx, l, notesRBAC, "kube-vip")
	log := startKubeVipAgent(t, l, bad, kc, notesARPEnv)
	if _, err := waitLog(ctx, log, "missing RBAC rule", "resources [endpointslices]", "deploy/agent/rbac.yaml"); err != nil {
		t.Fatal(err)
	}
	const services = 6 // the global pool's six addresses; by rendezvous hashing about half would prefer the first node
	for i := range services {
		if _, err := l.CreateService(ctx, "default", fmt.Sprintf("web%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range services {
		name := fmt.Sprintf("web%d", i)
		addrs, err := l.WaitAddress(ctx, "default", name)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.WaitBound(ctx, addrs[0], good.Name); err != nil {
			t.Fatalf("%s (%s): %v", name, addrs[0], err)
		}
		if _, err := l.WaitServedBy(ctx, addrs[0], lab.ServicePort, func(s string) bool { return s == good.Name }); err != nil {
			t.Fatalf("%s (%s): %v", name, addrs[0], err)
		}
	}
	t.Logf("%d Services bound on and answered by %s; %s (the notes' RBAC) is no candidate", services, good.Name, bad.Name)
}
