package testbed

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// portAttempts bounds the retries when a picked port was taken meanwhile.
const portAttempts = 5

// Env is a running etcd + kube-apiserver pair. Its methods are safe for
// concurrent use.
type Env struct {
	opts          Options
	dir           string
	etcdBin       string
	apiserverBin  string
	sec           *secrets
	etcdURL       string
	etcdArgs      []string
	apiPort       int
	apiserverArgs []string

	mu        sync.Mutex
	etcd      *proc
	apiserver *proc
	stopped   bool
}

// Start starts an Env for a test and stops it in t.Cleanup (printing the tail
// of the server logs first if the test failed). When a binary is missing the
// test is skipped, or fails if $VIP_REQUIRE_APISERVER is "1".
func Start(t testing.TB, opts ...Option) *Env {
	t.Helper()
	var o Options
	for _, f := range opts {
		f(&o)
	}
	if o.Logf == nil {
		o.Logf = t.Logf
	}
	env, err := StartProcess(context.Background(), o)
	if mb := (*MissingBinaryError)(nil); errors.As(err, &mb) {
		if os.Getenv(EnvRequireAPIServer) == "1" {
			t.Fatalf("%v (failing instead of skipping because %s=1)", err, EnvRequireAPIServer)
		}
		t.Skipf("%v", err)
	}
	if err != nil {
		t.Fatalf("testbed: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("testbed logs in %s (removed now):\n%s", env.Dir(), env.LogTail(40))
		}
		if err := env.Stop(); err != nil {
			t.Errorf("testbed: %v", err)
		}
	})
	return env
}

// StartProcess starts etcd and then kube-apiserver and waits until both are
// ready. The caller must call Env.Stop. A missing binary is reported as a
// *MissingBinaryError. On failure the error carries the tail of the logs and
// nothing is left running.
func StartProcess(ctx context.Context, opts Options) (*Env, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	etcdBin, apiBin, err := o.binaries()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(o.Dir, "vip-testbed-")
	if err != nil {
		return nil, fmt.Errorf("testbed: temp dir: %w", err)
	}
	e := &Env{opts: o, dir: dir, etcdBin: etcdBin, apiserverBin: apiBin}
	t0 := time.Now()
	if err := e.start(ctx); err != nil {
		err = fmt.Errorf("testbed: %w\n%s", err, e.LogTail(30))
		if serr := e.Stop(); serr != nil {
			err = errors.Join(err, serr)
		}
		return nil, err
	}
	o.Logf("testbed: etcd %s, kube-apiserver %s ready in %v (dir %s)", e.etcdURL, e.Server(),
		time.Since(t0).Round(time.Millisecond), dir)
	return e, nil
}

// start writes the credentials and starts both servers.
func (e *Env) start(ctx context.Context) error {
	sec, err := writeSecrets(e.dir, e.opts.Address, e.opts.ServiceCIDRs)
	if err != nil {
		return err
	}
	e.sec = sec
	if err := e.startEtcd(ctx); err != nil {
		return err
	}
	for attempt := 1; ; attempt++ {
		port, err := freePort(e.opts.Netns, e.opts.Address)
		if err != nil {
			return err
		}
		e.apiPort = port
		e.apiserverArgs = e.apiArgs()
		err = e.StartAPIServer(ctx)
		if err == nil {
			return nil
		}
		var pc *portClashError
		if !errors.As(err, &pc) || attempt == portAttempts {
			return err
		}
		e.opts.Logf("testbed: kube-apiserver port %d taken, retrying", port)
	}
}

// portClashError marks a server that exited because its port was taken.
type portClashError struct{ err error }

func (e *portClashError) Error() string { return e.err.Error() }
func (e *portClashError) Unwrap() error { return e.err }

// startEtcd starts etcd on two free ports, retrying on port clashes.
func (e *Env) startEtcd(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		ports, err := freePorts(e.opts.Netns, e.opts.Address, 2)
		if err != nil {
			return err
		}
		client := "http://" + hostPort(e.opts.Address, ports[0])
		peer := "http://" + hostPort(e.opts.Address, ports[1])
		args := []string{
			"--name", "testbed",
			"--data-dir", filepath.Join(e.dir, "etcd"),
			"--listen-client-urls", client, "--advertise-client-urls", client,
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
			"--initial-cluster", "testbed=" + peer,
			"--unsafe-no-fsync", // test data: skip fsync, much faster on shared disks
			"--log-level", "warn",
		}
		args = append(args, e.opts.EtcdArgs...)
		p, err := startProc("etcd", e.etcdLog(), e.opts.Netns, e.etcdBin, args)
		if err != nil {
			return err
		}
		e.mu.Lock()
		e.etcd, e.etcdArgs = p, args
		e.mu.Unlock()
		err = e.waitReady(ctx, p, []string{client + "/health"}, false)
		if err == nil {
			e.etcdURL = client
			return nil
		}
		p.kill()
		if !p.portClash() || attempt == portAttempts {
			return err
		}
		e.opts.Logf("testbed: etcd ports %v taken, retrying", ports)
		if err := os.RemoveAll(filepath.Join(e.dir, "etcd")); err != nil {
			return fmt.Errorf("reset etcd data dir: %w", err)
		}
	}
}

// apiArgs returns the kube-apiserver command line.
func (e *Env) apiArgs() []string {
	args := []string{
		"--etcd-servers", e.etcdURL,
		"--bind-address", e.opts.Address,
		"--advertise-address", e.opts.Address,
		"--secure-port", strconv.Itoa(e.apiPort),
		"--cert-dir", filepath.Join(e.dir, "certs"),
		"--tls-cert-file", e.sec.tlsCert,
		"--tls-private-key-file", e.sec.tlsKey,
		"--token-auth-file", e.sec.tokenFile,
		"--service-account-key-file", e.sec.saPub,
		"--service-account-signing-key-file", e.sec.saKey,
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--authorization-mode", "Node,RBAC",
		"--service-cluster-ip-range", e.opts.ServiceCIDRs,
		// No controller-manager creates "default" ServiceAccounts, so this
		// plugin would reject every Pod; tests create Pods for their status.
		"--disable-admission-plugins", "ServiceAccount",
		"--profiling=false",
	}
	if ip := net.ParseIP(e.opts.Address); ip != nil && ip.IsLoopback() {
		// The endpoint reconciler refuses a loopback advertise address; the
		// "kubernetes" Service then simply has no endpoints.
		args = append(args, "--endpoint-reconciler-type", "none")
	}
	return append(args, e.opts.APIServerArgs...)
}

// StopEtcd kills etcd (SIGKILL by PID) and waits for it to exit; the API
// server keeps running and fails its requests until StartEtcd.
func (e *Env) StopEtcd() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped {
		return errors.New("testbed: env stopped")
	}
	e.etcd.kill()
	return nil
}

// StartEtcd starts etcd again on the same ports and data (after StopEtcd)
// and waits for its /health.
func (e *Env) StartEtcd(ctx context.Context) error {
	e.mu.Lock()
	if e.stopped {
		e.mu.Unlock()
		return errors.New("testbed: env stopped")
	}
	if e.etcd != nil && !e.etcd.exited() {
		e.mu.Unlock()
		return errors.New("testbed: etcd is already running")
	}
	p, err := startProc("etcd", e.etcdLog(), e.opts.Netns, e.etcdBin, e.etcdArgs)
	if err != nil {
		e.mu.Unlock()
		return err
	}
	e.etcd = p
	e.mu.Unlock()
	if err := e.waitReady(ctx, p, []string{e.etcdURL + "/health"}, false); err != nil {
		p.kill()
		return err
	}
	return nil
}

// StopAPIServer kills kube-apiserver (SIGKILL by PID) and waits for it to
// exit; etcd keeps running. Use StartAPIServer to bring it back.
func (e *Env) StopAPIServer() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped {
		return errors.New("testbed: env stopped")
	}
	e.apiserver.kill()
	e.apiserver = nil
	return nil
}

// StartAPIServer starts kube-apiserver again with the same etcd, port and
// credentials (after StopAPIServer) and waits for /readyz. Starting a server
// that is running is an error.
func (e *Env) StartAPIServer(ctx context.Context) error {
	e.mu.Lock()
	if e.stopped {
		e.mu.Unlock()
		return errors.New("testbed: env stopped")
	}
	if e.apiserver != nil && !e.apiserver.exited() {
		e.mu.Unlock()
		return errors.New("testbed: kube-apiserver is already running")
	}
	p, err := startProc("kube-apiserver", e.apiserverLog(), e.opts.Netns, e.apiserverBin, e.apiserverArgs)
	if err != nil {
		e.mu.Unlock()
		return err
	}
	e.apiserver = p
	e.mu.Unlock()
	urls := []string{e.Server() + "/readyz"}
	for _, ns := range systemNamespaces() {
		urls = append(urls, e.Server()+"/api/v1/namespaces/"+ns)
	}
	if err := e.waitReady(ctx, p, urls, true); err != nil {
		p.kill()
		if p.portClash() {
			return &portClashError{err}
		}
		return err
	}
	return nil
}

// systemNamespaces are created by the API server shortly after /readyz
// turns 200; StartAPIServer waits for them so tests can use them at once.
func systemNamespaces() []string {
	return []string{"default", "kube-system", "kube-public", "kube-node-lease"}
}

// waitReady polls each of urls in turn until it answers 200, and fails when p
// exits, ctx ends or the ready timeout passes. With auth it uses TLS (the
// Env's CA) and the admin token.
func (e *Env) waitReady(ctx context.Context, p *proc, urls []string, auth bool) error {
	ctx, cancel := context.WithTimeout(ctx, e.opts.ReadyTimeout)
	defer cancel()
	tr := &http.Transport{DialContext: dialer(e.opts.Netns), DisableKeepAlives: true}
	if auth {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(e.sec.caPEM)
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	t0 := time.Now()
	var last string
	for len(urls) > 0 {
		url := urls[0]
		if p.exited() {
			return fmt.Errorf("%s exited before it was ready: %v", p.name, p.waitErr)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("%s readiness request: %w", p.name, err)
		}
		if auth {
			req.Header.Set("Authorization", "Bearer "+e.sec.adminToken)
		}
		resp, err := hc.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				urls = urls[1:]
				continue
			}
			last = fmt.Sprintf("%s: %s", resp.Status, body)
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready at %s after %v (last: %s): %w", p.name, url,
				time.Since(t0).Round(time.Millisecond), last, ctx.Err())
		case <-p.done:
		case <-time.After(100 * time.Millisecond):
		}
	}
	e.opts.Logf("testbed: %s ready after %v", p.name, time.Since(t0).Round(time.Millisecond))
	return nil
}

// Stop kills kube-apiserver, then etcd (SIGKILL by PID), and removes the
// Env's folder. It is idempotent.
func (e *Env) Stop() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped {
		return nil
	}
	e.stopped = true
	e.apiserver.kill()
	e.etcd.kill()
	if err := os.RemoveAll(e.dir); err != nil {
		return fmt.Errorf("testbed: remove %s: %w", e.dir, err)
	}
	return nil
}

// Dir is the Env's temporary folder (logs, credentials, etcd data).
func (e *Env) Dir() string { return e.dir }

// Server is the API server URL, for example https://127.0.0.1:43121.
func (e *Env) Server() string { return "https://" + hostPort(e.opts.Address, e.apiPort) }

// Address is the IP both servers listen on.
func (e *Env) Address() string { return e.opts.Address }

// EtcdURL is etcd's client URL.
func (e *Env) EtcdURL() string { return e.etcdURL }

// AdminToken is the bearer token of user "admin" (group system:masters).
func (e *Env) AdminToken() string { return e.sec.adminToken }

// CAData is the PEM CA certificate that signed the API server's certificate.
func (e *Env) CAData() []byte { return append([]byte(nil), e.sec.caPEM...) }

// etcdLog and apiserverLog are the log file paths.
func (e *Env) etcdLog() string      { return filepath.Join(e.dir, "etcd.log") }
func (e *Env) apiserverLog() string { return filepath.Join(e.dir, "kube-apiserver.log") }

// LogTail returns the last n lines of the etcd and kube-apiserver logs.
func (e *Env) LogTail(n int) string {
	var s string
	for _, p := range []string{e.etcdLog(), e.apiserverLog()} {
		if _, err := os.Stat(p); err != nil {
			continue
		}
		s += fmt.Sprintf("---- %s (last %d lines)\n%s\n", filepath.Base(p), n, tailFile(p, n))
	}
	return s
}
