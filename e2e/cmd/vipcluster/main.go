// Command vipcluster brings the real-cluster lab up and down (e2e/cluster):
//
//	vipcluster up      3 nodes (kubelet, containerd, kube-proxy), control plane,
//	                   vip installed from deploy/base with local images, a demo
//	                   Deployment behind a LoadBalancer Service; prints how to use it
//	vipcluster down    tears it down (processes by PID, mounts, namespaces, cgroups)
//	vipcluster forward relays 127.0.0.1:16443 to the lab's API server (started by up)
//	vipcluster dns     the lab's stand-in for cluster DNS: Service names to ClusterIPs (started by up)
//
// `make cluster` and `make cluster-down` run it. Needs root.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vip-lb/vip/e2e/cluster"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: vipcluster up|down|forward [flags]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	dir := fs.String("dir", "", "cluster folder (default <repo>/_out/cluster)")
	binDir := fs.String("bin", "", "folder of kubelet, kube-apiserver, ... (default <repo>/bin)")
	nodes := fs.Int("nodes", 3, "number of nodes")
	mode := fs.String("proxy-mode", cluster.KubeProxyIPT, "kube-proxy mode: iptables or nftables")
	listen := fs.String("listen", "127.0.0.1:16443", "forward: listen address")
	kubeconfig := fs.String("kubeconfig", "", "dns: kubeconfig of the lab")
	demo := fs.Bool("demo", true, "up: install vip and a demo Service")
	_ = fs.Parse(os.Args[2:])
	cfg := cluster.Config{Dir: *dir, BinDir: *binDir, Nodes: *nodes, ProxyMode: *mode,
		Logf: func(f string, a ...any) { fmt.Printf(f+"\n", a...) }}
	var err error
	switch os.Args[1] {
	case "up":
		err = up(ctx, cfg, *demo)
	case "down":
		err = down(cfg)
	case "forward":
		err = cluster.ServeForward(ctx, *listen)
	case "dns":
		err = serveDNS(ctx, *kubeconfig, *listen)
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		slog.Error("vipcluster", "err", err)
		os.Exit(1)
	}
}

func folder(cfg cluster.Config) (string, error) {
	if cfg.Dir != "" {
		return filepath.Abs(cfg.Dir)
	}
	repo, err := cluster.RepoDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(repo, "_out", "cluster"), nil
}

func down(cfg cluster.Config) error {
	dir, err := folder(cfg)
	if err != nil {
		return err
	}
	st, err := cluster.Load(dir)
	if errors.Is(err, os.ErrNotExist) {
		fmt.Printf("no cluster in %s\n", dir)
		return nil
	}
	if err != nil {
		return err
	}
	t0 := time.Now()
	if err := st.Down(); err != nil {
		return err
	}
	fmt.Printf("cluster down in %v; nothing left in %s\n", time.Since(t0).Round(time.Millisecond), dir)
	return nil
}

func up(ctx context.Context, cfg cluster.Config, demo bool) error {
	t0 := time.Now()
	c, err := cluster.Up(ctx, cfg)
	if err != nil {
		return err
	}
	fail := func(err error) error {
		fmt.Fprintf(os.Stderr, "%v\n(the cluster stays up for a look: make cluster-down removes it)\n", err)
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return fail(err)
	}
	if err := c.StartForwarder(ctx, self); err != nil {
		return fail(err)
	}
	if err := c.StartDNS(ctx, self); err != nil {
		return fail(err)
	}
	fmt.Printf("cluster up in %v\n", time.Since(t0).Round(time.Millisecond))
	vipLine := ""
	if demo {
		t1 := time.Now()
		if err := c.InstallVIP(ctx); err != nil {
			return fail(err)
		}
		fmt.Printf("vip installed (kubectl apply -k over deploy/base), nodes initialised, in %v\n", time.Since(t1).Round(time.Millisecond))
		if err := c.DeployEcho(ctx, "demo", "echo", 3); err != nil {
			return fail(err)
		}
		addr, err := c.ExposeLB(ctx, "demo", "echo", "echo", false)
		if err != nil {
			return fail(err)
		}
		vipLine = fmt.Sprintf("  nsenter --net=/run/netns/%s curl -s http://%s/     # demo/echo, a LoadBalancer Service from vip\n", cluster.ClientNS, addr)
	}
	fmt.Printf(`
The cluster (%d nodes, kube-proxy %s) is up; its folder is %s.

  export KUBECONFIG=%s
  %s get nodes -o wide       # kubectl built from the pinned module; any kubectl works
  %s get svc -A
%s  nsenter --net=/run/netns/%s bash       # a shell on the client, 10.98.0.100, beside the nodes
  make cluster-down                              # removes everything

Logs: %s/control/*.log, %s/<node>/{containerd,kubelet,kube-proxy}.log
`, len(c.Nodes()), cfg.ProxyMode, c.Dir(), c.HostKubeconfig(), filepath.Join(binOr(cfg), "kubectl"),
		filepath.Join(binOr(cfg), "kubectl"), vipLine, cluster.ClientNS, c.Dir(), c.Dir())
	return nil
}

// serveDNS runs the lab's stand-in for cluster DNS (cluster.ServeDNS).
func serveDNS(ctx context.Context, kubeconfig, listen string) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	return cluster.ServeDNS(ctx, cs, listen)
}

func binOr(cfg cluster.Config) string {
	if cfg.BinDir != "" {
		return cfg.BinDir
	}
	return "bin"
}
