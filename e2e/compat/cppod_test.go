//go:build e2e

package compat

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"

	"github.com/vip-lb/vip/e2e/lab"
)

// generatedPod runs the control-plane docs' generator command (seed 001:
// manifest pod --interface ens192 --vip 192.168.0.75 --arp
// --leaderElection, interface and address swapped for the lab's) and
// returns the Pod it prints.
func generatedPod(t *testing.T, bin, iface string, vip netip.Addr) *v1.Pod {
	t.Helper()
	out, err := exec.Command(bin, "manifest", "pod", "--interface", iface, "--vip", vip.String(), "--arp", "--leaderElection").Output()
	if err != nil {
		t.Fatalf("manifest pod: %v", err)
	}
	var pod v1.Pod
	if err := yaml.UnmarshalStrict(out, &pod); err != nil {
		t.Fatalf("manifest pod printed no Pod: %v\n%s", err, out)
	}
	if pod.Kind != "Pod" || len(pod.Spec.Containers) != 1 {
		t.Fatalf("manifest pod printed %s with %d containers", pod.Kind, len(pod.Spec.Containers))
	}
	return &pod
}

// podEnv turns the container's env into what the kubelet gives the
// process on node n: literal values, spec.nodeName and status.hostIP.
func podEnv(t *testing.T, c v1.Container, n *lab.Node) []string {
	t.Helper()
	var env []string
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil {
			switch {
			case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName":
				v = n.Name
			case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "status.hostIP":
				v = n.IP4.String()
			default:
				t.Fatalf("env %s: a source the lab does not model: %+v", e.Name, e.ValueFrom)
			}
		}
		env = append(env, e.Name+"="+v)
	}
	return env
}

// nodeAPIServer stands in for a control-plane node's own kube-apiserver
// (hostNetwork, listening on every address on port): a TCP relay in the
// node's namespace to the lab's API server, which is dialled from that
// namespace. It is closed with the test.
func nodeAPIServer(t *testing.T, ns string, port int, server string) {
	t.Helper()
	var ln net.Listener
	if err := lab.InNetns(ns, func() (err error) {
		ln, err = net.Listen("tcp", ":"+strconv.Itoa(port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); _ = ln.Close() })
	dial := lab.DialerIn(ns)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := dial(ctx, "tcp", server)
				if err != nil {
					return
				}
				defer u.Close()
				go func() { _, _ = io.Copy(u, c); _ = u.Close() }()
				_, _ = io.Copy(c, u)
			}()
		}
	}()
}

// TestGeneratedControlPlanePod: the static Pod vip's generator prints for
// the control-plane docs' command, run as the kubelet would run it on two
// control-plane nodes: its command/args and env, host name = node name,
// its hostPath volumes bind-mounted in a private mount namespace
// (/etc/kubernetes/admin.conf holding the lab's admin credentials, a
// fresh /run/vip-agent), each node's kube-apiserver on the Pod's port
// being a relay to the lab's API server. The control-plane VIP must be
// bound on exactly one node, answer ARP and TCP from the client
// namespace, and lead a client there to the API server (TLS checked
// against the cluster CA, admin credentials).
func TestGeneratedControlPlanePod(t *testing.T) {
	ctx, l := newLab(t)
	bin := filepath.Join(l.Opts.BinDir, "vip-agent")
	vip := netip.MustParseAddr(fmt.Sprintf("10.%d.0.75", l.X))
	pod := generatedPod(t, bin, "eth0", vip)
	c := pod.Spec.Containers[0]
	argv := append(append([]string{}, c.Command...), c.Args...)
	if len(c.Command) == 0 {
		argv = append([]string{bin}, argv...) // the image's ENTRYPOINT ["/vip-agent"]
	} else {
		argv[0] = bin
	}
	mounts := map[string]string{} // container path -> hostPath volume
	for _, m := range c.VolumeMounts {
		for _, vol := range pod.Spec.Volumes {
			if vol.Name == m.Name && vol.HostPath != nil {
				mounts[m.MountPath] = vol.HostPath.Path
			}
		}
	}
	if mounts["/etc/kubernetes/admin.conf"] != "/etc/kubernetes/admin.conf" {
		t.Fatalf("the generated Pod does not mount admin.conf: %v", mounts)
	}
	for _, n := range l.Nodes {
		if err := l.StopAgent(n.Name, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	}
	port := 0
	for _, e := range c.Env {
		if e.Name == "port" {
			port, _ = strconv.Atoi(e.Value)
		}
	}
	if port == 0 {
		t.Fatalf("the generated Pod has no port env: %v", c.Env)
	}
	server := strings.TrimPrefix(l.Env.Server(), "https://")
	for _, n := range l.Nodes {
		nodeAPIServer(t, n.NS, port, server)
	}
	for _, n := range l.Nodes {
		adminConf := filepath.Join(l.Dir, n.Name+"-admin.conf")
		if err := l.Env.Kubeconfig(adminConf, ""); err != nil {
			t.Fatal(err)
		}
		startStaticPod(t, ctx, l, n, argv, podEnv(t, c, n), adminConf)
	}
	if err := l.WaitBoundFunc(ctx, vip, func(on []string) bool { return len(on) == 1 }); err != nil {
		t.Fatal(err)
	}
	node := answeringNode(t, ctx, l, vip)
	on, err := l.BoundOn(vip)
	if err != nil {
		t.Fatal(err)
	}
	if len(on) != 1 || on[0] != node {
		t.Fatalf("%s bound on %v, answered by %s", vip, on, node)
	}
	if err := l.WaitClientNeigh(ctx, vip, node); err != nil {
		t.Fatal(err)
	}
	host, version := apiThroughVIP(t, ctx, l, vip, port)
	t.Logf("control-plane VIP %s bound on %s only, answers ARP and TCP from the client; kube-apiserver %s through %s (%s)",
		vip, node, version, host, strings.Join(argv, " "))
}

// startStaticPod runs argv with env on node n as the kubelet runs a
// control-plane static Pod there: host name = node name, in a private
// mount namespace with /etc/kubernetes/admin.conf bind-mounted from
// adminConf (the hostPath volume of kube-vip's and vip's static Pods) and
// a fresh /run/vip-agent. It waits for the agent's line saying it took
// admin.conf and returns the log.
func startStaticPod(t *testing.T, ctx context.Context, l *lab.Lab, n *lab.Node, argv, env []string, adminConf string) string {
	t.Helper()
	dir := filepath.Join(l.Dir, n.Name+"-cp")
	if err := os.MkdirAll(filepath.Join(dir, "run"), 0o755); err != nil {
		t.Fatal(err)
	}
	// Mount points: /etc/kubernetes and /run in the private mount
	// namespace only (tmpfs), then the volumes on them.
	script := `set -e
mount -t tmpfs none /etc/kubernetes 2>/dev/null || { mount -t tmpfs none /etc; mkdir /etc/kubernetes; }
touch /etc/kubernetes/admin.conf && mount --bind "$2" /etc/kubernetes/admin.conf
mount -t tmpfs none /run && mkdir -p /run/vip-agent && mount --bind "$1/run" /run/vip-agent
hostname "$0"; shift 2; exec "$@"`
	args := append([]string{"netns", "exec", n.NS, "unshare", "--mount", "--uts", "--propagation", "private",
		"sh", "-c", script, n.Name, dir, adminConf}, argv...)
	log := filepath.Join(l.Dir, n.Name+"-cp-pod.log")
	f, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", args...)
	cmd.Env = append([]string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}, env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(log)
			t.Logf("---- %s\n%s", log, b)
		}
	})
	stopOnCleanup(t, cmd, f)
	out, err := waitLog(ctx, log, `path="/etc/kubernetes/admin.conf"`)
	if err != nil {
		t.Fatalf("%s: %v", n.Name, err)
	}
	return out
}

// apiThroughVIP is kubectl's view from the client namespace: the API
// server through https://VIP:port, admin credentials, the server
// certificate checked against the cluster CA (for the name it was issued
// to). It returns the URL and the server's version.
func apiThroughVIP(t *testing.T, ctx context.Context, l *lab.Lab, vip netip.Addr, port int) (string, string) {
	t.Helper()
	adminConf := filepath.Join(l.Dir, "admin.kubeconfig")
	cfg, err := clientcmd.BuildConfigFromFlags("", adminConf)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Host = "https://" + net.JoinHostPort(vip.String(), strconv.Itoa(port))
	cfg.TLSClientConfig.ServerName = l.Env.Address()
	cfg.Dial = lab.DialerIn(l.Client)
	cfg.Timeout = 2 * time.Second
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var version string
	if err := lab.Poll(ctx, 100*time.Millisecond, func() (bool, error) {
		v, err := cs.Discovery().ServerVersion()
		if err != nil {
			return false, nil
		}
		version = v.GitVersion
		return true, nil
	}); err != nil {
		t.Fatalf("the API server never answered through %s: %v", cfg.Host, err)
	}
	return cfg.Host, version
}

// TestKubeadmStaticPodAdminConf replays the kubeadm install of kube-vip's
// control-plane docs with only the image swapped: the static Pod they
// show (args [start], their env word for word, interface ens160 and
// address 192.168.0.75 mapped to the lab's eth0 and 10.X.0.75; no
// cp_enable, no kubeconfig setting) with /etc/kubernetes/admin.conf
// mounted, on two control-plane nodes. admin.conf names the VIP as
// `kubeadm init --control-plane-endpoint VIP:6443` writes it (its
// tls-server-name stands in for kubeadm's certificate, which lists the
// endpoint); each node's kube-apiserver on 6443 is a relay to the lab's
// API server. The agents must take admin.conf and say so, run the control
// plane only (kube-vip's start command), bind the VIP on one node, and a
// client must reach the API server through the VIP.
func TestKubeadmStaticPodAdminConf(t *testing.T) {
	ctx, l := newLab(t)
	bin := filepath.Join(l.Opts.BinDir, "vip-agent")
	vip := netip.MustParseAddr(fmt.Sprintf("10.%d.0.75", l.X))
	for _, n := range l.Nodes {
		if err := l.StopAgent(n.Name, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	}
	server := strings.TrimPrefix(l.Env.Server(), "https://")
	for _, n := range l.Nodes {
		nodeAPIServer(t, n.NS, 6443, server)
	}
	adminConf := filepath.Join(l.Dir, "kubeadm-admin.conf")
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kubernetes"] = &clientcmdapi.Cluster{Server: "https://" + net.JoinHostPort(vip.String(), "6443"),
		CertificateAuthorityData: l.Env.CAData(), TLSServerName: "kubernetes"}
	cfg.AuthInfos["kubernetes-admin"] = &clientcmdapi.AuthInfo{Token: l.Env.AdminToken()}
	cfg.Contexts["kubernetes-admin@kubernetes"] = &clientcmdapi.Context{Cluster: "kubernetes", AuthInfo: "kubernetes-admin"}
	cfg.CurrentContext = "kubernetes-admin@kubernetes"
	if err := clientcmd.WriteToFile(*cfg, adminConf); err != nil {
		t.Fatal(err)
	}
	// vip.yaml of the docs: args [start] and this env.
	env := []string{"vip_arp=true", "vip_interface=eth0", "vip_leaderelection=true", "vip_leaseduration=5",
		"vip_renewdeadline=3", "vip_retryperiod=1", "vip_address=" + vip.String()}
	for _, n := range l.Nodes {
		out := startStaticPod(t, ctx, l, n, []string{bin, "start"}, env, adminConf)
		if strings.Contains(out, "in-cluster") {
			t.Fatalf("%s: the agent looked for in-cluster credentials:\n%s", n.Name, out)
		}
		if _, err := waitLog(ctx, filepath.Join(l.Dir, n.Name+"-cp-pod.log"), `source="kubeadm admin.conf"`, "kube-vip's start command: the control-plane VIP is on",
			"control plane only: LoadBalancer Services are not served"); err != nil {
			t.Fatalf("%s: %v", n.Name, err)
		}
	}
	if err := l.WaitBoundFunc(ctx, vip, func(on []string) bool { return len(on) == 1 }); err != nil {
		t.Fatal(err)
	}
	node := answeringNode(t, ctx, l, vip)
	if err := l.WaitClientNeigh(ctx, vip, node); err != nil {
		t.Fatal(err)
	}
	host, version := apiThroughVIP(t, ctx, l, vip, 6443)
	t.Logf("kubeadm static Pod (start, admin.conf naming the VIP): %s bound on %s, kube-apiserver %s through %s", vip, node, version, host)
}
