package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// A kubeadm node is a network namespace on the kubeadm lab's bridge plus a
// mount namespace of its own, held by a sleeping process (Holder), in which
// the places kubeadm, the kubelet, containerd and the static Pods use at
// fixed paths are the node's own: a tmpfs on /run (containerd's shim
// sockets, the agent's /run/vip-agent, the xtables lock), and bind mounts
// of the node's folder on /var/lib (kubelet, etcd, CNI cache), /var/log
// (Pod logs), /etc/kubernetes and /etc/hosts (the nodes' names, so that
// nothing asks a DNS server). containerd, the kubelet, kubeadm and every
// container (runc inherits containerd's mount namespace) run in both
// namespaces, so three kubeadm control-plane nodes share one machine, and
// the host sees none of it but the empty /etc/kubernetes mount point.
type nodeMount struct {
	target string // the path in the node
	sub    string // the node subfolder (or file) bound there; "" = tmpfs
}

var kubeadmMounts = []nodeMount{
	{target: "/run"},
	{target: "/var/lib", sub: "var-lib"},
	{target: "/var/log", sub: "var-log"},
	{target: "/etc/kubernetes", sub: "etc-kubernetes"},
	{target: "/etc/hosts", sub: "hosts"},
}

// KubeadmNode is one kubeadm node's processes and folder.
type KubeadmNode struct {
	Name       string `json:"name"`
	IP         string `json:"ip"`
	Dir        string `json:"dir"`
	Holder     Proc   `json:"holder"` // holds the mount namespace
	Containerd Proc   `json:"containerd"`
	Kubelet    Proc   `json:"kubelet"`
}

// Socket is the node's containerd socket.
func (n KubeadmNode) Socket() string { return filepath.Join(n.Dir, "state", "containerd.sock") }

// Host is path p as the node sees it (one of kubeadmMounts), on the host.
func (n KubeadmNode) Host(p string) string {
	for _, m := range kubeadmMounts {
		if rel, ok := strings.CutPrefix(p, m.target); ok && m.sub != "" && (rel == "" || rel[0] == '/') {
			return filepath.Join(n.Dir, m.sub, rel)
		}
	}
	return p
}

// enter is the nsenter prefix that runs a program in the node's network
// and mount namespaces.
func (n KubeadmNode) enter() []string {
	return []string{"--mount=/proc/" + strconv.Itoa(n.Holder.PID) + "/ns/mnt", "--net=" + netnsPath(n.Name), "--"}
}

// KubeadmState is the kubeadm nodes of a lab, saved beside the State.
type KubeadmState struct {
	Dir   string        `json:"dir"`
	Nodes []KubeadmNode `json:"nodes"`
	mu    sync.Mutex
}

func (k *KubeadmState) save() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	b, err := json.MarshalIndent(k, "", "  ")
	if err != nil {
		return err
	}
	p := filepath.Join(k.Dir, kubeadmStateFile)
	if err := os.WriteFile(p+".tmp", b, 0o600); err != nil {
		return fmt.Errorf("save kubeadm state: %w", err)
	}
	return os.Rename(p+".tmp", p)
}

// update changes node name under the lock and saves.
func (k *KubeadmState) update(name string, f func(n *KubeadmNode)) error {
	k.mu.Lock()
	for i := range k.Nodes {
		if k.Nodes[i].Name == name {
			f(&k.Nodes[i])
		}
	}
	k.mu.Unlock()
	return k.save()
}

func (k *KubeadmState) node(name string) (KubeadmNode, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, n := range k.Nodes {
		if n.Name == name {
			return n, nil
		}
	}
	return KubeadmNode{}, fmt.Errorf("cluster: no kubeadm node %q", name)
}

// runInNode runs a program in node n's namespaces; the error carries its
// output.
func runInNode(ctx context.Context, n KubeadmNode, bin string, args ...string) (string, error) {
	return runInNodeEnv(ctx, n, nil, bin, args...)
}

// runInNodeEnv is runInNode with extra environment variables.
func runInNodeEnv(ctx context.Context, n KubeadmNode, env []string, bin string, args ...string) (string, error) {
	full := append(append(n.enter(), bin), args...)
	cmd := exec.CommandContext(ctx, "nsenter", full...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s on %s: %w: %s", filepath.Base(bin), strings.Join(args, " "), n.Name, err,
			strings.TrimSpace(lastLines(string(out), 30)))
	}
	return string(out), nil
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// startInNode starts a long-running program in the node's namespaces (a
// session of its own, output appended to log); nsenter execs it, so the PID
// is the program's.
func startInNode(n KubeadmNode, name, log, bin string, args ...string) (Proc, error) {
	return startProc(name, "", log, "nsenter", append(append(n.enter(), bin), args...)...)
}

// startHolder starts the process that holds the node's mount namespace
// (private propagation: nothing mounted there reaches the host) and waits
// until it has it.
func startHolder(n KubeadmNode) (Proc, error) {
	p, err := startProc("mount-namespace", n.Name, filepath.Join(n.Dir, "holder.log"),
		"unshare", "--mount", "--propagation", "private", "--", "sleep", "infinity")
	if err != nil {
		return p, err
	}
	self, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		return p, err
	}
	end := time.Now().Add(10 * time.Second)
	for {
		comm, _ := os.ReadFile("/proc/" + strconv.Itoa(p.PID) + "/comm")
		ns, _ := os.Readlink("/proc/" + strconv.Itoa(p.PID) + "/ns/mnt")
		if strings.TrimSpace(string(comm)) == "sleep" && ns != "" && ns != self {
			return p, nil
		}
		if !p.Alive() || time.Now().After(end) {
			return p, fmt.Errorf("mount namespace holder of %s did not start (comm %q):\n%s", n.Name, comm, tail(p.Log, 10))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startNodeContainerd starts the node's containerd in its namespaces and
// waits for the socket.
func startNodeContainerd(ctx context.Context, n KubeadmNode) (Proc, error) {
	p, err := startInNode(n, "containerd", filepath.Join(n.Dir, "containerd.log"), "containerd",
		"--config", filepath.Join(n.Dir, "containerd.toml"))
	if err != nil {
		return p, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err = Poll(ctx, 50*time.Millisecond, func() (bool, error) {
		if c, err := net.Dial("unix", n.Socket()); err == nil {
			c.Close()
			return true, nil
		}
		if !p.Alive() {
			return false, fmt.Errorf("containerd of %s exited:\n%s", n.Name, tail(p.Log, 20))
		}
		return false, nil
	})
	if err != nil {
		return p, fmt.Errorf("containerd of %s: %w\n%s", n.Name, err, tail(p.Log, 20))
	}
	return p, nil
}

var kubeadmFlags = regexp.MustCompile(`KUBELET_KUBEADM_ARGS="([^"]*)"`)

// kubeletWhenConfigured plays kubeadm's kubelet systemd unit: it waits
// until kubeadm has written the kubelet's configuration, flags and a
// kubeconfig (kubelet.conf, or bootstrap-kubelet.conf on a joining node),
// then starts the kubelet with the drop-in's command line
// (--bootstrap-kubeconfig --kubeconfig --config $KUBELET_KUBEADM_ARGS). It
// returns when the kubelet is started, ctx ends or kubeadm is done without
// configuring one (done closed).
func (k *KubeadmState) kubeletWhenConfigured(ctx context.Context, name, kubelet string, done <-chan struct{}) error {
	n, err := k.node(name)
	if err != nil {
		return err
	}
	var args []string
	err = Poll(ctx, 100*time.Millisecond, func() (bool, error) {
		select {
		case <-done:
			return false, errors.New("kubeadm ended before it configured the kubelet")
		default:
		}
		flags, err := os.ReadFile(n.Host("/var/lib/kubelet/kubeadm-flags.env"))
		if err != nil {
			return false, nil
		}
		m := kubeadmFlags.FindSubmatch(flags)
		if m == nil {
			return false, nil
		}
		cfg, err := os.ReadFile(n.Host("/var/lib/kubelet/config.yaml"))
		if err != nil || !strings.Contains(string(cfg), "kind: KubeletConfiguration") {
			return false, nil
		}
		_, kerr := os.Stat(n.Host("/etc/kubernetes/kubelet.conf"))
		_, berr := os.Stat(n.Host("/etc/kubernetes/bootstrap-kubelet.conf"))
		if kerr != nil && berr != nil {
			return false, nil
		}
		args = append([]string{"--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf",
			"--kubeconfig=/etc/kubernetes/kubelet.conf", "--config=/var/lib/kubelet/config.yaml"},
			strings.Fields(string(m[1]))...)
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("kubelet of %s: %w", name, err)
	}
	p, err := startInNode(n, "kubelet", filepath.Join(n.Dir, "kubelet.log"), kubelet, append(args, "--v=1")...)
	if uerr := k.update(name, func(n *KubeadmNode) { n.Kubelet = p }); uerr != nil && err == nil {
		err = uerr
	}
	return err
}

// downNodes stops every kubeadm node: kubelets first, then every pod
// sandbox through CRI (restarting a killed containerd in the node's
// namespaces), containerd, what is left in the node's cgroup and its shims,
// and last the mount namespace holder, whose namespace and mounts go with
// it.
func (k *KubeadmState) downNodes() error {
	var errs []error
	for _, n := range k.Nodes {
		errs = append(errs, n.Kubelet.Stop(10*time.Second))
	}
	for i := range k.Nodes {
		n := &k.Nodes[i]
		if n.Holder.Alive() {
			if !n.Containerd.Alive() {
				if _, err := os.Stat(filepath.Join(n.Dir, "containerd.toml")); err == nil {
					p, err := startNodeContainerd(context.Background(), *n)
					errs = append(errs, err)
					n.Containerd = p
					_ = k.save()
				}
			}
			if n.Containerd.Alive() {
				ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
				errs = append(errs, removeSandboxes(ctx, n.Socket()))
				cancel()
			}
		}
		errs = append(errs, n.Containerd.Stop(15*time.Second))
		var left []Proc
		for _, pid := range append(cgroupPIDs(n.Name), shimPIDs(n.Socket())...) {
			if st, err := startTime(pid); err == nil {
				p := Proc{Name: "leftover", PID: pid, Start: st}
				errs = append(errs, p.Signal(syscall.SIGKILL))
				left = append(left, p)
			}
		}
		for _, p := range left {
			if !waitGone(p, 10*time.Second) {
				errs = append(errs, fmt.Errorf("%s: pid %d still alive after SIGKILL", n.Name, p.PID))
			}
		}
		errs = append(errs, n.Holder.Stop(5*time.Second))
	}
	return errors.Join(errs...)
}
