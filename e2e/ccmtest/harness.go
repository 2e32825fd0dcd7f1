// Package ccmtest runs the real vip-ccm binary against a real API server
// (pkg/testbed) with exactly the ServiceAccount and RBAC shipped in
// deploy/ccm, and offers the helpers its integration tests and the e2e
// benchmark share.
package ccmtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/vip-lb/vip/pkg/testbed"
)

// EnvCCMBin names a prebuilt vip-ccm binary to run instead of building one.
const EnvCCMBin = "VIP_CCM_BIN"

// PoolsNamespace and PoolsName locate the pools ConfigMap (vip's defaults).
const (
	PoolsNamespace = "kube-system"
	PoolsName      = "kubevip"
)

// RepoRoot returns the folder holding go.mod above the working directory.
func RepoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("no go.mod above %s", wd)
		}
	}
}

var build struct {
	once sync.Once
	path string
	err  error
}

// Binary returns the vip-ccm binary: $VIP_CCM_BIN when set, else one built
// once per test process with `go build` (into a fixed folder under the temp
// dir, replaced atomically, so nothing accumulates).
func Binary(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv(EnvCCMBin); p != "" {
		return p
	}
	build.once.Do(func() {
		root, err := RepoRoot()
		if err != nil {
			build.err = err
			return
		}
		dir := filepath.Join(os.TempDir(), "vip-ccm-test-bin")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			build.err = err
			return
		}
		tmp, err := os.CreateTemp(dir, ".vip-ccm-*")
		if err != nil {
			build.err = err
			return
		}
		tmp.Close()
		t0 := time.Now()
		cmd := exec.Command("go", "build", "-o", tmp.Name(), "./cmd/vip-ccm")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			os.Remove(tmp.Name())
			build.err = fmt.Errorf("go build ./cmd/vip-ccm: %w\n%s", err, out)
			return
		}
		build.path = filepath.Join(dir, "vip-ccm")
		if err := os.Rename(tmp.Name(), build.path); err != nil {
			build.err = err
			return
		}
		tb.Logf("built vip-ccm in %v", time.Since(t0).Round(time.Millisecond))
	})
	if build.err != nil {
		tb.Fatalf("vip-ccm binary: %v", build.err)
	}
	return build.path
}

// Harness is one API server with vip-ccm's RBAC applied and a kubeconfig
// holding a token of ServiceAccount kube-system/vip-ccm.
type Harness struct {
	TB         testing.TB
	Env        *testbed.Env
	Admin      kubernetes.Interface
	Kubeconfig string
	Dir        string
	bin        string
}

// New starts an API server (skipping the test as testbed decides), applies
// deploy/ccm/rbac.yaml and mints the vip-ccm token.
func New(tb testing.TB, opts ...testbed.Option) *Harness {
	tb.Helper()
	env := testbed.Start(tb, opts...)
	bin := Binary(tb)
	root, err := RepoRoot()
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := env.ApplyFile(ctx, filepath.Join(root, "deploy", "ccm", "rbac.yaml")); err != nil {
		tb.Fatal(err)
	}
	tok, err := env.ServiceAccountToken(ctx, "kube-system", "vip-ccm")
	if err != nil {
		tb.Fatal(err)
	}
	dir := tb.TempDir()
	kc := filepath.Join(dir, "kubeconfig")
	if err := env.Kubeconfig(kc, tok); err != nil {
		tb.Fatal(err)
	}
	return &Harness{TB: tb, Env: env, Admin: env.AdminClient(), Kubeconfig: kc, Dir: dir, bin: bin}
}

// CCM is one running vip-ccm process.
type CCM struct {
	Name string
	Log  string
	Port int
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	// rbacQuiet are periods in which RBAC denials are expected: a
	// kube-apiserver that has just started refuses requests until its
	// authorizer has read the roles, and vip-ccm reconnects within 250 ms.
	rbacQuiet [][2]time.Time
}

// ExpectRBACDenials marks from..until as a period in which RBAC denials
// are not reported (right after an API server restart).
func (c *CCM) ExpectRBACDenials(from, until time.Time) {
	c.rbacQuiet = append(c.rbacQuiet, [2]time.Time{from, until})
}

// klogTime reads the time of a klog line ("E1123 15:32:22.097427 ...").
func klogTime(line string) (time.Time, bool) {
	f := strings.Fields(line)
	if len(f) < 2 || len(f[0]) != 5 {
		return time.Time{}, false
	}
	t, err := time.ParseInLocation("0102 15:04:05.000000", f[0][1:]+" "+f[1], time.Local)
	if err != nil {
		return time.Time{}, false
	}
	return t.AddDate(time.Now().Year(), 0, 0), true
}

// freePort returns a free TCP port on 127.0.0.1.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// BaseArgs are the flags every test run needs: where the API server is, the
// delegated authn/authz kubeconfigs (so the RBAC for them is exercised), and
// a free secure port on loopback.
func (h *Harness) BaseArgs(port int) []string {
	return []string{
		"--kubeconfig=" + h.Kubeconfig,
		"--authentication-kubeconfig=" + h.Kubeconfig,
		"--authorization-kubeconfig=" + h.Kubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
	}
}

// StartCCM runs vip-ccm with BaseArgs plus args; it is killed (SIGKILL by
// PID) when the test ends. Its log is kept in the harness folder and printed
// (tail) if the test failed.
func (h *Harness) StartCCM(name string, args ...string) *CCM {
	h.TB.Helper()
	port, err := freePort()
	if err != nil {
		h.TB.Fatal(err)
	}
	c := &CCM{Name: name, Log: filepath.Join(h.Dir, name+".log"), Port: port, done: make(chan struct{})}
	logf, err := os.OpenFile(c.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		h.TB.Fatal(err)
	}
	defer logf.Close()
	full := append(h.BaseArgs(port), args...)
	fmt.Fprintf(logf, "==== %s %s %s\n", time.Now().Format(time.RFC3339Nano), h.bin, strings.Join(full, " "))
	c.cmd = exec.Command(h.bin, full...)
	c.cmd.Dir = h.Dir
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		h.TB.Fatal(err)
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	h.TB.Cleanup(func() {
		c.Kill()
		if lines := c.RBACDenials(); len(lines) > 0 {
			h.TB.Errorf("%s was denied by RBAC (deploy/ccm/rbac.yaml lacks a rule):\n%s", name, strings.Join(lines, "\n"))
		}
		if h.TB.Failed() {
			h.TB.Logf("---- %s log tail:\n%s", name, Tail(c.Log, 60))
		}
	})
	return c
}

// Kill sends SIGKILL to the process by PID and waits for it.
func (c *CCM) Kill() {
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Kill()
	<-c.done
}

// Exited reports whether the process ended, and its error.
func (c *CCM) Exited() (bool, error) {
	select {
	case <-c.done:
		return true, c.err
	default:
		return false, nil
	}
}

// PID is the process id.
func (c *CCM) PID() int { return c.cmd.Process.Pid }

// LogContains reports whether the log has a line containing s.
func (c *CCM) LogContains(s string) bool {
	b, _ := os.ReadFile(c.Log)
	return strings.Contains(string(b), s)
}

// RBACDenials returns the log lines in which the API server refused a
// request of vip-ccm's ServiceAccount.
func (c *CCM) RBACDenials() []string {
	b, _ := os.ReadFile(c.Log)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.Contains(l, "system:serviceaccount:kube-system:vip-ccm") || !strings.Contains(l, "forbidden") {
			continue
		}
		if at, ok := klogTime(strings.TrimSpace(l)); ok && slices.ContainsFunc(c.rbacQuiet, func(p [2]time.Time) bool {
			return !at.Before(p[0]) && !at.After(p[1])
		}) {
			continue
		}
		out = append(out, l)
	}
	return out
}

// Tail returns the last n lines of a file.
func Tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// SetPools creates or replaces the data of the pools ConfigMap.
func (h *Harness) SetPools(ctx context.Context, data map[string]string) {
	h.TB.Helper()
	if err := SetPools(ctx, h.Admin, data); err != nil {
		h.TB.Fatal(err)
	}
}

// SetPools creates or replaces the data of the pools ConfigMap.
func SetPools(ctx context.Context, cs kubernetes.Interface, data map[string]string) error {
	cms := cs.CoreV1().ConfigMaps(PoolsNamespace)
	cm, err := cms.Get(ctx, PoolsName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = cms.Create(ctx, &v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: PoolsName, Namespace: PoolsNamespace}, Data: data}, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	cm.Data = data
	_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
	return err
}

// EnsureNamespace creates namespace ns if needed.
func EnsureNamespace(ctx context.Context, cs kubernetes.Interface, ns string) error {
	_, err := cs.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}

// LBService returns a LoadBalancer Service with one TCP port and no node
// ports (so thousands fit), changed by the mutators.
func LBService(ns, name string, mutate ...func(*v1.Service)) *v1.Service {
	no := false
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1.ServiceSpec{
			Type:                          v1.ServiceTypeLoadBalancer,
			AllocateLoadBalancerNodePorts: &no,
			Selector:                      map[string]string{"app": name},
			Ports:                         []v1.ServicePort{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	for _, m := range mutate {
		m(svc)
	}
	return svc
}

// WithPorts sets the Service's TCP ports.
func WithPorts(ports ...int32) func(*v1.Service) {
	return func(s *v1.Service) {
		s.Spec.Ports = nil
		for _, p := range ports {
			s.Spec.Ports = append(s.Spec.Ports, v1.ServicePort{Name: "p" + strconv.Itoa(int(p)), Protocol: v1.ProtocolTCP, Port: p, TargetPort: intstr.FromInt32(p)})
		}
	}
}

// WithAnnotation sets one annotation.
func WithAnnotation(k, v string) func(*v1.Service) {
	return func(s *v1.Service) {
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations[k] = v
	}
}

// WithFamilies sets ipFamilyPolicy and ipFamilies.
func WithFamilies(policy v1.IPFamilyPolicy, fams ...v1.IPFamily) func(*v1.Service) {
	return func(s *v1.Service) {
		s.Spec.IPFamilyPolicy = &policy
		s.Spec.IPFamilies = fams
	}
}

// WithClass sets spec.loadBalancerClass.
func WithClass(c string) func(*v1.Service) {
	return func(s *v1.Service) { s.Spec.LoadBalancerClass = &c }
}

// IngressIPs returns the addresses in status.loadBalancer.ingress.
func IngressIPs(svc *v1.Service) []string {
	var out []string
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		out = append(out, ing.IP)
	}
	return out
}

// WaitIngress polls until the Service has at least n addresses in status
// and returns them.
func WaitIngress(ctx context.Context, cs kubernetes.Interface, ns, name string, n int, timeout time.Duration) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last *v1.Service
	for {
		svc, err := cs.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			last = svc
			if ips := IngressIPs(svc); len(ips) >= n {
				return ips, nil
			}
		}
		select {
		case <-ctx.Done():
			st := "<not found>"
			if last != nil {
				st = fmt.Sprintf("%+v", last.Status.LoadBalancer)
			}
			return nil, fmt.Errorf("service %s/%s: no %d ingress addresses after %v (status %s)", ns, name, n, timeout, st)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Events returns the Events about the named object in ns with the given
// reason (any reason when empty).
func Events(ctx context.Context, cs kubernetes.Interface, ns, kind, name, reason string) ([]v1.Event, error) {
	sel := fields.Set{"involvedObject.name": name, "involvedObject.kind": kind}
	if reason != "" {
		sel["reason"] = reason
	}
	l, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: sel.AsSelector().String()})
	if err != nil {
		return nil, err
	}
	return l.Items, nil
}

// WaitEvent polls until an Event with that reason (and type, when set)
// about the object exists, and returns it.
func WaitEvent(ctx context.Context, cs kubernetes.Interface, ns, kind, name, typ, reason string, timeout time.Duration) (*v1.Event, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		evs, err := Events(ctx, cs, ns, kind, name, reason)
		if err == nil {
			for i := range evs {
				if typ == "" || evs[i].Type == typ {
					return &evs[i], nil
				}
			}
		}
		select {
		case <-ctx.Done():
			all, _ := Events(context.Background(), cs, ns, kind, name, "")
			var seen []string
			for _, e := range all {
				seen = append(seen, e.Type+"/"+e.Reason+": "+e.Message)
			}
			return nil, fmt.Errorf("no %s event %q on %s %s/%s after %v; events: %q", typ, reason, kind, ns, name, timeout, seen)
		case <-time.After(150 * time.Millisecond):
		}
	}
}

// Duplicates returns the addresses held by more than one of the Services
// (ignoring Services listed in shared), as address -> holders.
func Duplicates(svcs []v1.Service) map[string][]string {
	by := map[string][]string{}
	for _, s := range svcs {
		for _, ip := range IngressIPs(&s) {
			by[ip] = append(by[ip], s.Namespace+"/"+s.Name)
		}
	}
	out := map[string][]string{}
	for ip, hs := range by {
		if len(hs) > 1 {
			slices.Sort(hs)
			out[ip] = hs
		}
	}
	return out
}

// CountWithAddress lists the Services of ns and returns how many have an
// address, and the list.
func CountWithAddress(ctx context.Context, cs kubernetes.Interface, ns string) (int, []v1.Service, error) {
	l, err := cs.CoreV1().Services(ns).List(ctx, metav1.ListOptions{ResourceVersion: "0"})
	if err != nil {
		return 0, nil, err
	}
	n := 0
	for i := range l.Items {
		if len(l.Items[i].Status.LoadBalancer.Ingress) > 0 {
			n++
		}
	}
	return n, l.Items, nil
}

// ErrTimeout marks a wait that ran out of time.
var ErrTimeout = errors.New("timed out")

// CreateServices creates LoadBalancer Services prefix-from .. prefix-(from+n-1)
// in ns (created if missing) with the given number of parallel workers.
func CreateServices(ctx context.Context, cs kubernetes.Interface, ns, prefix string, from, n, workers int) error {
	return CreateServicesWith(ctx, cs, ns, prefix, from, n, workers)
}

// CreateServicesWith is CreateServices with mutators applied to every
// Service.
func CreateServicesWith(ctx context.Context, cs kubernetes.Interface, ns, prefix string, from, n, workers int, mutate ...func(*v1.Service)) error {
	if err := EnsureNamespace(ctx, cs, ns); err != nil {
		return err
	}
	idx := make(chan int)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range idx {
				name := prefix + "-" + strconv.Itoa(i)
				_, err := cs.CoreV1().Services(ns).Create(ctx, LBService(ns, name, mutate...), metav1.CreateOptions{})
				if err != nil && !apierrors.IsAlreadyExists(err) {
					select {
					case errs <- fmt.Errorf("create %s/%s: %w", ns, name, err):
					default:
					}
				}
			}
		}()
	}
	for i := from; i < from+n; i++ {
		idx <- i
	}
	close(idx)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}
