//go:build e2e

package compat

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/vip-lb/vip/e2e/lab"
	"github.com/vip-lb/vip/pkg/election"
)

// renderDaemonSet runs vip's generator as the documents' alias runs
// kube-vip's (`ctr run --rm --net-host IMAGE vip /kube-vip manifest
// daemonset args…`: the path /kube-vip resolved inside the agent image's
// file tree) and returns the DaemonSet it prints and the other objects
// (ServiceAccount, RBAC, admission policy) as YAML to apply.
func renderDaemonSet(t *testing.T, l *lab.Lab, args ...string) (*appsv1.DaemonSet, []byte) {
	t.Helper()
	bin := filepath.Join(l.Opts.BinDir, "vip-agent")
	root := imageTree(t, filepath.Join(l.Opts.RepoDir, "Dockerfile.agent"), "/out/vip-agent", bin)
	exe, err := resolveIn(root, "/kube-vip", bin)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(exe, append([]string{"manifest", "daemonset"}, args...)...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("/kube-vip manifest daemonset %v: %v: %s", args, err, ee.Stderr)
		}
		t.Fatalf("/kube-vip manifest daemonset %v: %v", args, err)
	}
	var ds *appsv1.DaemonSet
	var rest [][]byte
	for _, doc := range bytes.Split(out, []byte("\n---\n")) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			t.Fatalf("manifest daemonset printed an undecodable document: %v\n%s", err, doc)
		}
		if tm.Kind != "DaemonSet" {
			rest = append(rest, doc)
			continue
		}
		ds = &appsv1.DaemonSet{}
		if err := yaml.UnmarshalStrict(doc, ds); err != nil {
			t.Fatalf("manifest daemonset: %v\n%s", err, doc)
		}
	}
	if ds == nil || len(ds.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("manifest daemonset printed no DaemonSet with one container:\n%s", out)
	}
	return ds, bytes.Join(rest, []byte("\n---\n"))
}

// runAsKubelet replaces the lab's agents by the rendered DaemonSet's
// container, run on every node as the kubelet runs a hostNetwork Pod: its
// command and args (the image's ENTRYPOINT is /vip-agent), its env with
// spec.nodeName and status.hostIP filled in, the host name set to the
// node's, KUBERNETES_SERVICE_HOST/PORT and the Pod's ServiceAccount token,
// CA and namespace at /var/run/secrets/kubernetes.io/serviceaccount, and
// each hostPath volume bind-mounted from a folder of that node, all in a
// private mount namespace (a tmpfs on /run, so nothing of the host's /run
// is seen or touched). The objects the generator printed beside the
// DaemonSet are applied first, and the token is one of the DaemonSet's
// ServiceAccount. It returns each node's log.
func runAsKubelet(t *testing.T, ctx context.Context, l *lab.Lab, ds *appsv1.DaemonSet, objs []byte) map[string]string {
	t.Helper()
	if err := l.Env.ApplyYAML(ctx, objs); err != nil {
		t.Fatalf("applying the generator's objects: %v", err)
	}
	spec := ds.Spec.Template.Spec
	c := spec.Containers[0]
	if !spec.HostNetwork {
		t.Fatal("the generated DaemonSet is not hostNetwork")
	}
	sa := spec.ServiceAccountName
	tok, err := l.Env.ServiceAccountToken(ctx, ds.Namespace, sa)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(l.Opts.BinDir, "vip-agent")
	argv := append(append([]string{}, c.Command...), c.Args...)
	if len(c.Command) == 0 {
		argv = append([]string{bin}, argv...) // ENTRYPOINT ["/vip-agent"]
	} else if c.Command[0] != "/vip-agent" && c.Command[0] != "/kube-vip" {
		t.Fatalf("command %v: not a program of the image", c.Command)
	} else {
		argv[0] = bin
	}
	hostPaths := map[string]string{}
	secrets := map[string]*corev1.SecretVolumeSource{}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
		if v.Secret != nil {
			secrets[v.Name] = v.Secret
		}
	}
	for _, n := range l.Nodes {
		if err := l.StopAgent(n.Name, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	}
	host, port, _ := strings.Cut(strings.TrimPrefix(l.Env.Server(), "https://"), ":")
	logs := map[string]string{}
	for _, n := range l.Nodes {
		dir := filepath.Join(l.Dir, n.Name+"-pod")
		sadir := filepath.Join(dir, "serviceaccount")
		if err := os.MkdirAll(sadir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, b := range map[string][]byte{"token": []byte(tok), "ca.crt": l.Env.CAData(), "namespace": []byte(ds.Namespace)} {
			if err := os.WriteFile(filepath.Join(sadir, name), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		script := []string{"set -e", "mount -t tmpfs none /run",
			"mkdir -p /run/secrets/kubernetes.io/serviceaccount",
			fmt.Sprintf("mount --bind %q /run/secrets/kubernetes.io/serviceaccount", sadir)}
		for _, m := range c.VolumeMounts {
			if !strings.HasPrefix(m.MountPath, "/run/") {
				t.Fatalf("volume %s on %s: the lab mounts volumes under /run only", m.Name, m.MountPath)
			}
			var src string
			if sv, ok := secrets[m.Name]; ok {
				src = secretVolume(t, ctx, l, ds.Namespace, sv, filepath.Join(dir, "secret-"+m.Name))
			} else if hp, ok := hostPaths[m.Name]; ok {
				src = filepath.Join(dir, "hostpath", hp)
				if err := os.MkdirAll(src, 0o755); err != nil {
					t.Fatal(err)
				}
			} else {
				t.Fatalf("volume %s: neither a hostPath nor a Secret volume (the lab models those only)", m.Name)
			}
			script = append(script, fmt.Sprintf("mkdir -p %q && mount --bind %q %q", m.MountPath, src, m.MountPath))
		}
		script = append(script, `hostname "$0"`, `exec "$@"`)
		args := append([]string{"netns", "exec", n.NS, "unshare", "--mount", "--uts", "--propagation", "private",
			"sh", "-c", strings.Join(script, "\n"), n.Name}, argv...)
		log := filepath.Join(l.Dir, n.Name+"-generated.log")
		f, err := os.Create(log)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("ip", args...)
		cmd.Env = append([]string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME=" + n.Name,
			"KUBERNETES_SERVICE_HOST=" + host, "KUBERNETES_SERVICE_PORT=" + port}, podEnv(t, c, n)...)
		cmd.Stdout, cmd.Stderr = f, f
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		stopOnCleanup(t, cmd, f)
		logs[n.Name] = log
	}
	logTailsOnFailure(t, logs)
	for node, log := range logs {
		if _, err := waitLog(ctx, log, "API credentials: in-cluster ServiceAccount"); err != nil {
			t.Fatalf("%s: %v", node, err)
		}
	}
	return logs
}

// TestGeneratedARPDaemonSet: the on-premise blog's ARP command (manifest
// daemonset --inCluster --services --arp --leaderElection, word for word)
// rendered by vip's generator and run as the kubelet would on every node:
// the Service's address answers from the client namespace, bound on one
// node.
func TestGeneratedARPDaemonSet(t *testing.T) {
	ctx, l := newLab(t)
	ds, objs := renderDaemonSet(t, l, "--inCluster", "--services", "--arp", "--leaderElection")
	runAsKubelet(t, ctx, l, ds, objs)
	addr := newService(t, ctx, l, "default", "nginx")
	node := answeringNode(t, ctx, l, addr)
	if err := l.WaitBound(ctx, addr, node); err != nil {
		t.Fatal(err)
	}
	// The generator's default for this form is --liveness=link with the key
	// Secret it printed: every agent publishes its link address.
	for _, n := range l.Nodes {
		hb, err := l.Env.AdminClient().CoordinationV1().Leases(ds.Namespace).Get(ctx, election.HeartbeatPrefix+n.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if hb.Annotations[election.AnnotationLink] == "" {
			t.Errorf("%s: heartbeat without %s: the agent does not run --liveness=link", n.Name, election.AnnotationLink)
		}
	}
	t.Logf("%s answers the client from %s (bound there only) under the generated DaemonSet (link liveness)", addr, node)
}

// secretVolume writes a Secret volume's files into dir as the kubelet
// does: the Secret read from the API server, its items (or every key) as
// files.
func secretVolume(t *testing.T, ctx context.Context, l *lab.Lab, ns string, sv *corev1.SecretVolumeSource, dir string) string {
	t.Helper()
	sec, err := l.Env.AdminClient().CoreV1().Secrets(ns).Get(ctx, sv.SecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("Secret volume %s: %v", sv.SecretName, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for k := range sec.Data {
		files[k] = k
	}
	if len(sv.Items) > 0 {
		files = map[string]string{}
		for _, it := range sv.Items {
			files[it.Key] = it.Path
		}
	}
	for k, path := range files {
		if err := os.WriteFile(filepath.Join(dir, path), sec.Data[k], 0o400); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// nodeAddrs lists the nodes' lab addresses.
func nodeAddrs(l *lab.Lab) []netip.Addr {
	var out []netip.Addr
	for _, n := range l.Nodes {
		out = append(out, n.IP4)
	}
	return out
}

// TestGeneratedBGPDaemonSet: the on-premise blog's BGP command (manifest
// daemonset --interface lo --inCluster --services --bgp --bgpRouterID
// 192.168.0.1 --bgppeers 192.168.0.10:65000::false,…11…,…12…), the three
// routers mapped to three BIRD namespaces on the lab bridge (the first
// also forwarding to the client behind it). The router ID stays the
// document's: it is only an identifier, no packet goes to it. Every router
// learns the Service's /32 from both nodes (iBGP) and the client behind
// the first reaches it.
func TestGeneratedBGPDaemonSet(t *testing.T) {
	ctx, l := newLab(t)
	r, err := l.AddRouter()
	if err != nil {
		t.Fatal(err)
	}
	peerAddrs := []netip.Addr{r.LAN, l.IP4(251), l.IP4(252)}
	nodes := nodeAddrs(l)
	peers := []*birdPeer{startBIRDPeer(t, l, r.NS, r.LAN, 65000, 65000, nodes, true)}
	for i, a := range peerAddrs[1:] {
		ns := addPeerNS(t, ctx, l, "peer"+strconv.Itoa(i+2), a.String()+"/16")
		peers = append(peers, startBIRDPeer(t, l, ns, a, 65000, 65000, nodes, false))
	}
	var list []string
	for _, a := range peerAddrs {
		list = append(list, a.String()+":65000::false")
	}
	ds, objs := renderDaemonSet(t, l, "--interface", "lo", "--inCluster", "--services", "--bgp",
		"--bgpRouterID", "192.168.0.1", "--bgppeers", strings.Join(list, ","))
	runAsKubelet(t, ctx, l, ds, objs)
	for _, p := range peers {
		if err := p.waitEstablished(ctx, l, len(l.Nodes)); err != nil {
			t.Fatal(err)
		}
	}
	addr := newService(t, ctx, l, "default", "nginx")
	for _, p := range peers {
		if _, err := p.waitRoute(ctx, l, addr, nodes, ""); err != nil {
			t.Fatal(err)
		}
	}
	node := waitReachedFrom(t, ctx, l, r, addr)
	t.Logf("%s learned by the three routers from both nodes, answered by %s through the first", addr, node)
}

// TestGeneratedEquinixAnnotationsDaemonSet: the services docs' command for
// Equinix Metal's node annotations (manifest daemonset --interface
// $INTERFACE --services --bgp --annotations metal.equinix.com --inCluster,
// $INTERFACE = lo). The Nodes carry the annotations Equinix's CCM writes
// (node AS 65000, peer AS 65530, the peer's address mapped to the lab's
// router, each node's own address as src-ip); the agents take their BGP
// settings from them, the router learns the Service (eBGP, AS path 65000)
// and the client behind it reaches it. The docs' other command (--metal
// --provider-config …: the Equinix Metal API) is refused by the generator
// in one line.
func TestGeneratedEquinixAnnotationsDaemonSet(t *testing.T) {
	ctx, l := newLab(t)
	bin := filepath.Join(l.Opts.BinDir, "vip-agent")
	out, err := exec.Command(bin, "manifest", "daemonset", "--interface", "lo", "--services", "--inCluster", "--bgp", "--metal",
		"--provider-config", "/etc/cloud-sa/cloud-sa.json").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--metal=true is not supported") || strings.Count(strings.TrimSpace(string(out)), "\n") != 0 {
		t.Fatalf("--metal: err %v; want one line refusing it:\n%s", err, out)
	}
	t.Logf("--metal refused: %s", strings.TrimSpace(string(out)))

	r, err := l.AddRouter()
	if err != nil {
		t.Fatal(err)
	}
	nodes := nodeAddrs(l)
	peer := startBIRDPeer(t, l, r.NS, r.LAN, 65530, 65000, nodes, true)
	for _, n := range l.Nodes {
		node, err := l.Admin.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if node.Annotations == nil {
			node.Annotations = map[string]string{}
		}
		for k, v := range map[string]string{
			"bgp-peers-0-node-asn": "65000", "bgp-peers-0-peer-asn": "65530",
			"bgp-peers-0-peer-ip": r.LAN.String(), "bgp-peers-0-src-ip": n.IP4.String(),
		} {
			node.Annotations["metal.equinix.com/"+k] = v
		}
		if _, err := l.Admin.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	ds, objs := renderDaemonSet(t, l, "--interface", "lo", "--services", "--bgp", "--annotations", "metal.equinix.com", "--inCluster")
	var ann string
	for _, e := range ds.Spec.Template.Spec.Containers[0].Env {
		if e.Name == "annotation" {
			ann = e.Value
		}
	}
	if ann != "metal.equinix.com" {
		t.Fatalf("the rendered DaemonSet does not read the metal.equinix.com annotations: %v", ds.Spec.Template.Spec.Containers[0].Env)
	}
	runAsKubelet(t, ctx, l, ds, objs)
	if err := peer.waitEstablished(ctx, l, len(l.Nodes)); err != nil {
		t.Fatal(err)
	}
	addr := newService(t, ctx, l, "default", "nginx")
	if _, err := peer.waitRoute(ctx, l, addr, nodes, "65000"); err != nil {
		t.Fatal(err)
	}
	node := waitReachedFrom(t, ctx, l, r, addr)
	t.Logf("%s learned from both nodes' annotation settings, answered by %s through the router", addr, node)
}
