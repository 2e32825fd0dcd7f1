package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Down tears the cluster down and leaves nothing behind: kubelets and
// kube-proxies stopped; every pod sandbox stopped and removed through
// containerd's CRI API (so the CNI plugins release addresses and delete
// the pods' network namespaces), restarting a node's containerd first if it
// was killed; containerd stopped; leftovers in the nodes' cgroups and their
// shims killed by PID; the control plane stopped; every mount under the
// cluster folder unmounted; namespaces and cgroups deleted; the host paths
// kubelet creates at fixed places removed when they did not exist before;
// the folder removed. It carries on past errors and returns them all.
func (s *State) Down() error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	podNetns := s.podNetns()
	for _, n := range s.Nodes {
		add(n.Kubelet.Stop(10 * time.Second))
		add(n.KubeProxy.Stop(10 * time.Second))
	}
	for i := range s.Nodes {
		add(s.cleanNode(&s.Nodes[i]))
	}
	for i := len(s.Control) - 1; i >= 0; i-- {
		add(s.Control[i].Stop(10 * time.Second))
	}
	add(unmountUnder(s.Dir))
	for _, p := range podNetns {
		_ = syscall.Unmount(p, syscall.MNT_DETACH)
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			add(err)
		}
	}
	add(s.deleteNamespaces())
	add(s.removeCgroups())
	add(s.removeHostPaths())
	if len(errs) == 0 {
		add(os.RemoveAll(s.Dir))
	}
	return errors.Join(errs...)
}

// cleanNode removes every pod sandbox of the node through CRI, then stops
// containerd and kills what is left in the node's cgroup and its shims.
func (s *State) cleanNode(n *NodeState) error {
	var errs []error
	if _, err := os.Stat(filepath.Join(n.Dir, "containerd.toml")); err == nil {
		if !n.Containerd.Alive() {
			p, err := startProc("containerd", n.Name, filepath.Join(n.Dir, "containerd.log"), "containerd",
				"--config", filepath.Join(n.Dir, "containerd.toml"))
			if err != nil {
				errs = append(errs, err)
			}
			n.Containerd = p
			_ = s.save()
		}
		if n.Containerd.Alive() {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			errs = append(errs, removeSandboxes(ctx, n.Socket()))
			cancel()
		}
		errs = append(errs, n.Containerd.Stop(15*time.Second))
	}
	for _, pid := range append(cgroupPIDs(n.Name), shimPIDs(n.Socket())...) {
		p := Proc{Name: "leftover", PID: pid}
		if st, err := startTime(pid); err == nil {
			p.Start = st
			errs = append(errs, p.Signal(syscall.SIGKILL))
		}
	}
	return errors.Join(errs...)
}

// removeSandboxes stops and removes every pod sandbox of a containerd.
func removeSandboxes(ctx context.Context, socket string) error {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("CRI %s: %w", socket, err)
	}
	defer conn.Close()
	rc := runtimeapi.NewRuntimeServiceClient(conn)
	var list *runtimeapi.ListPodSandboxResponse
	for {
		list, err = rc.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
		if err == nil {
			break
		}
		select { // containerd may just have been restarted
		case <-ctx.Done():
			return fmt.Errorf("CRI list sandboxes %s: %w", socket, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	var errs []error
	for _, sb := range list.Items {
		if _, err := rc.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
			errs = append(errs, fmt.Errorf("stop sandbox %s: %w", sb.Id, err))
		}
		if _, err := rc.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
			errs = append(errs, fmt.Errorf("remove sandbox %s: %w", sb.Id, err))
		}
	}
	return errors.Join(errs...)
}

// cgroupPIDs lists the processes in the node's cgroup tree (pids hierarchy).
func cgroupPIDs(node string) []int {
	var pids []int
	root := filepath.Join("/sys/fs/cgroup/pids", node)
	_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
			return nil
		}
		b, _ := os.ReadFile(p)
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids
}

// shimPIDs lists the containerd shims serving the containerd at socket (they
// carry `-address <socket>` on their command line).
func shimPIDs(socket string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) == 0 || !strings.HasPrefix(filepath.Base(args[0]), "containerd-shim") {
			continue
		}
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-address" && args[i+1] == socket {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// podNetns maps the network namespaces of the processes in the nodes'
// cgroups to the /run/netns/cni-* files that hold them (a safety net for
// sandboxes CRI could not remove).
func (s *State) podNetns() []string {
	inodes := map[uint64]bool{}
	for _, n := range s.Nodes {
		for _, pid := range cgroupPIDs(n.Name) {
			var st syscall.Stat_t
			if syscall.Stat("/proc/"+strconv.Itoa(pid)+"/ns/net", &st) == nil {
				inodes[st.Ino] = true
			}
		}
	}
	files, _ := filepath.Glob(filepath.Join(netnsDir, "cni-*"))
	var out []string
	for _, f := range files {
		var st syscall.Stat_t
		if syscall.Stat(f, &st) == nil && inodes[st.Ino] {
			out = append(out, f)
		}
	}
	return out
}

// unmountUnder detaches every mount below dir, deepest first.
func unmountUnder(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	var mps []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 5 {
			continue
		}
		mp := unescapeMount(fs[4])
		if strings.HasPrefix(mp, dir+"/") || mp == dir {
			mps = append(mps, mp)
		}
	}
	sort.Slice(mps, func(i, j int) bool { return len(mps[i]) > len(mps[j]) })
	var errs []error
	for _, mp := range mps {
		if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) &&
			!errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", mp, err))
		}
	}
	return errors.Join(errs...)
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// removeCgroups deletes the nodes' cgroup trees in every hierarchy,
// deepest first (rmdir; a cgroup with processes left refuses).
func (s *State) removeCgroups() error {
	hs, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	var errs []error
	for _, cg := range s.Cgroups {
		for _, h := range hs {
			root := filepath.Join(h, cg)
			var dirs []string
			_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					dirs = append(dirs, p)
				}
				return nil
			})
			for i := len(dirs) - 1; i >= 0; i-- {
				if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, syscall.ENOENT) {
					errs = append(errs, fmt.Errorf("rmdir %s: %w", dirs[i], err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// removeHostPaths removes kubelet's /var/log/containers links into the
// cluster folder, the recorded host files and the fixed host folders that
// did not exist before Up.
func (s *State) removeHostPaths() error {
	links, _ := filepath.Glob("/var/log/containers/*.log")
	for _, l := range links {
		if t, err := os.Readlink(l); err == nil && strings.HasPrefix(t, s.Dir+"/") {
			_ = os.Remove(l)
		}
	}
	var errs []error
	for _, f := range s.HostFiles {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	for _, p := range s.HostPaths {
		if err := unmountUnder(p); err != nil {
			errs = append(errs, err)
		}
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
