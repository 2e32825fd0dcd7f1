package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// The control plane runs as processes in the CPNS namespace rather than as
// kubeadm static Pods: kubeadm's control-plane images would have to carry
// the dynamically linked kube-apiserver with glibc copied in, every node
// shares the machine's /etc/kubernetes unless it gets a mount namespace of
// its own, and processes start in ~3 s against kubeadm's ~17 s. The
// kubelets, containerd and kube-proxy — the parts vip meets — are the real
// thing either way.

// startControlPlane starts etcd, kube-apiserver, kube-controller-manager
// and kube-scheduler and waits until the API server is ready.
func (c *Cluster) startControlPlane(ctx context.Context) error {
	d := filepath.Join(c.st.Dir, "control")
	if err := os.MkdirAll(d, 0o755); err != nil {
		return err
	}
	bin := func(n string) string { return filepath.Join(c.st.BinDir, n) }
	etcd, err := startProc("etcd", CPNS, filepath.Join(d, "etcd.log"), bin("etcd"),
		"--data-dir", filepath.Join(d, "etcd"),
		"--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "default=http://127.0.0.1:2380", "--unsafe-no-fsync", "--log-level", "warn")
	if err := c.addControl(etcd, err); err != nil {
		return err
	}
	p := c.pki
	api, err := startProc("kube-apiserver", CPNS, filepath.Join(d, "kube-apiserver.log"), bin("kube-apiserver"),
		"--etcd-servers", "http://127.0.0.1:2379",
		"--bind-address", "0.0.0.0", "--advertise-address", APIServerIP, "--secure-port", strconv.Itoa(apiPort),
		"--cert-dir", filepath.Join(d, "certs"),
		"--tls-cert-file", p.file("apiserver.crt"), "--tls-private-key-file", p.file("apiserver.key"),
		"--client-ca-file", p.file("ca.crt"),
		"--kubelet-client-certificate", p.file("kubelet-client.crt"), "--kubelet-client-key", p.file("kubelet-client.key"),
		"--kubelet-preferred-address-types", "InternalIP,Hostname",
		"--token-auth-file", p.file("tokens.csv"),
		"--service-account-key-file", p.file("sa.pub"), "--service-account-signing-key-file", p.file("sa.key"),
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--authorization-mode", "Node,RBAC",
		"--enable-admission-plugins", "NodeRestriction",
		"--service-cluster-ip-range", ServiceCIDR,
		"--allow-privileged=true", "--profiling=false")
	if err := c.addControl(api, err); err != nil {
		return err
	}
	if err := c.waitAPI(ctx, api); err != nil {
		return err
	}
	for _, u := range []struct{ name, user string }{
		{"kube-controller-manager", "system:kube-controller-manager"}, {"kube-scheduler", "system:kube-scheduler"},
	} {
		if err := p.kubeconfig(filepath.Join(d, u.name+".kubeconfig"), c.labServer(), u.user); err != nil {
			return err
		}
	}
	kcm, err := startProc("kube-controller-manager", CPNS, filepath.Join(d, "kube-controller-manager.log"),
		bin("kube-controller-manager"),
		"--kubeconfig", filepath.Join(d, "kube-controller-manager.kubeconfig"),
		"--use-service-account-credentials=true", "--leader-elect=false", "--secure-port=0",
		"--service-account-private-key-file", p.file("sa.key"), "--root-ca-file", p.file("ca.crt"),
		"--service-cluster-ip-range", ServiceCIDR, "--cluster-cidr", ClusterCIDR,
		// The nodes' pod ranges are fixed (routes between nodes); the
		// controller must not hand out its own.
		"--allocate-node-cidrs=false",
		// The cloud node controllers are vip-ccm's (--cloud-provider=external).
		"--cloud-provider=external",
		"--node-monitor-grace-period=20s")
	if err := c.addControl(kcm, err); err != nil {
		return err
	}
	sch, err := startProc("kube-scheduler", CPNS, filepath.Join(d, "kube-scheduler.log"), bin("kube-scheduler"),
		"--kubeconfig", filepath.Join(d, "kube-scheduler.kubeconfig"), "--leader-elect=false", "--secure-port=0")
	return c.addControl(sch, err)
}

func (c *Cluster) addControl(p Proc, err error) error {
	if p.PID > 0 {
		c.st.mu.Lock()
		c.st.Control = append(c.st.Control, p)
		c.st.mu.Unlock()
		if serr := c.st.save(); serr != nil && err == nil {
			err = serr
		}
	}
	if err != nil {
		return fmt.Errorf("%w\n%s", err, tail(p.Log, 20))
	}
	return nil
}

// labServer is the API server's URL inside the lab.
func (c *Cluster) labServer() string { return "https://" + APIServerIP + ":" + strconv.Itoa(apiPort) }

// waitAPI polls /readyz (from inside the lab) until the API server is ready.
func (c *Cluster) waitAPI(ctx context.Context, api Proc) error {
	ca, err := os.ReadFile(c.pki.file("ca.crt"))
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext:     dialerIn(ClientNS),
		TLSClientConfig: &tls.Config{RootCAs: pool},
	}}
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.labServer()+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+c.pki.tokens["admin"])
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		if !api.Alive() {
			return fmt.Errorf("kube-apiserver exited:\n%s", tail(api.Log, 30))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kube-apiserver not ready (%s):\n%s", last, tail(api.Log, 30))
		case <-time.After(200 * time.Millisecond):
		}
	}
}
