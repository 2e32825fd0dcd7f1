package cluster

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/vip-lb/vip/pkg/lbsvc"
)

// UninitializedTaint is the taint kubelet --cloud-provider=external puts
// on a node until a cloud-controller-manager initialises it.
const UninitializedTaint = "node.cloudprovider.kubernetes.io/uninitialized"

// Poll calls f every interval until it returns true or an error, or ctx
// ends (the error then names the last state f reported via its error-free
// false).
func Poll(ctx context.Context, interval time.Duration, f func() (bool, error)) error {
	for {
		ok, err := f()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

// WaitNodesReady waits until every node is registered and Ready.
func (c *Cluster) WaitNodesReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	var last string
	err := Poll(ctx, 200*time.Millisecond, func() (bool, error) {
		nodes, err := c.Admin.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		ready := 0
		for _, n := range nodes.Items {
			for _, cond := range n.Status.Conditions {
				if cond.Type == v1.NodeReady && cond.Status == v1.ConditionTrue {
					ready++
				}
			}
		}
		last = fmt.Sprintf("%d of %d nodes registered, %d Ready", len(nodes.Items), len(c.st.Nodes), ready)
		return ready == len(c.st.Nodes), nil
	})
	if err != nil {
		return fmt.Errorf("nodes not Ready (%s): %w\n%s", last, err, c.Logs(15))
	}
	return nil
}

// Kubectl runs bin/kubectl with the lab kubeconfig in the client namespace
// and returns its combined output.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	full := append([]string{"--net=" + netnsPath(ClientNS), "--", filepath.Join(c.st.BinDir, "kubectl"),
		"--kubeconfig", c.LabKubeconfig()}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", full...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// vipOverlay is the user's kustomization over deploy/base: the lab's
// images (instead of the registry's) and the lab's pool.
const vipOverlay = `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - {{BASE}}
images:
  - name: ghcr.io/vip-lb/vip-ccm
    newName: {{REPO}}/vip-ccm
    newTag: {{TAG}}
  - name: ghcr.io/vip-lb/vip-agent
    newName: {{REPO}}/vip-agent
    newTag: {{TAG}}
patches:
  - target: {kind: ConfigMap, name: kubevip, namespace: kube-system}
    patch: |
      - op: replace
        path: /data
        value:
          range-global: {{POOL}}
`

// InstallVIP installs vip the way a user does: `kubectl apply -k` of a
// kustomization over deploy/base that only swaps the images for the lab's
// and the pool for the lab's addresses. It waits until vip-ccm is
// available, vip-agent is ready on every node and no node keeps the
// uninitialized taint.
func (c *Cluster) InstallVIP(ctx context.Context) error {
	k := expand(vipOverlay, "{{REPO}}", ImageRepo, "{{TAG}}", ImageTag, "{{POOL}}", PoolRange)
	dir, err := c.writeKustomization("vip-kustomize", filepath.Join("deploy", "base"), k)
	if err != nil {
		return err
	}
	if _, err := c.Kubectl(ctx, "apply", "-k", dir); err != nil {
		return err
	}
	return c.WaitVIP(ctx)
}

// writeKustomization writes the kustomization k (its {{BASE}} replaced by
// the path to the repository's folder base) into folder name of the
// cluster folder and returns the folder.
func (c *Cluster) writeKustomization(name, base, k string) (string, error) {
	dir := filepath.Join(c.st.Dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	rel, err := filepath.Rel(dir, filepath.Join(c.st.RepoDir, base))
	if err != nil {
		return "", err
	}
	k = expand(k, "{{BASE}}", rel)
	return dir, os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644)
}

// UninstallKustomize deletes what `kubectl apply -k` of the lab's
// kustomization in folder name (vip-kustomize, vip-kustomize-bgp)
// created, waiting until the pods are gone (foreground cascade).
func (c *Cluster) UninstallKustomize(ctx context.Context, name string) error {
	_, err := c.Kubectl(ctx, "delete", "-k", filepath.Join(c.st.Dir, name), "--cascade=foreground", "--wait", "--timeout=3m")
	return err
}

// WaitVIP waits for vip-ccm available, vip-agent ready on every node and
// every node initialised (the uninitialized taint removed by vip-ccm).
func (c *Cluster) WaitVIP(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	var last string
	err := Poll(ctx, 250*time.Millisecond, func() (bool, error) {
		d, err := c.Admin.AppsV1().Deployments("kube-system").Get(ctx, "vip-ccm", metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		ds, err := c.Admin.AppsV1().DaemonSets("kube-system").Get(ctx, "vip-agent", metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		nodes, err := c.Admin.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		tainted := 0
		for _, n := range nodes.Items {
			for _, t := range n.Spec.Taints {
				if t.Key == UninitializedTaint {
					tainted++
				}
			}
		}
		n := int32(len(c.st.Nodes))
		last = fmt.Sprintf("vip-ccm %d/%d available (%d updated), vip-agent %d/%d ready (%d updated, %d unavailable), %d nodes tainted uninitialized",
			d.Status.AvailableReplicas, *d.Spec.Replicas, d.Status.UpdatedReplicas, ds.Status.NumberReady, n,
			ds.Status.UpdatedNumberScheduled, ds.Status.NumberUnavailable, tainted)
		// A rollout (apply over an install) is done when the controllers saw
		// the new spec and every pod runs it.
		rolled := d.Status.ObservedGeneration >= d.Generation && d.Status.UpdatedReplicas == *d.Spec.Replicas &&
			d.Status.Replicas == *d.Spec.Replicas &&
			ds.Status.ObservedGeneration >= ds.Generation && ds.Status.UpdatedNumberScheduled == n && ds.Status.NumberUnavailable == 0
		return rolled && d.Status.AvailableReplicas >= 1 && ds.Status.NumberReady == n && tainted == 0, nil
	})
	if err != nil {
		pods, _ := c.Kubectl(context.Background(), "get", "pods", "-A", "-o", "wide")
		return fmt.Errorf("vip not ready (%s): %w\n%s", last, err, pods)
	}
	return nil
}

// DeployEcho creates (or keeps) a Deployment of labpod serve with replicas
// pods spread over the nodes, and waits until they are all Ready.
func (c *Cluster) DeployEcho(ctx context.Context, ns, name string, replicas int32) error {
	if err := c.ensureNamespace(ctx, ns); err != nil {
		return err
	}
	labels := map[string]string{"app": name}
	env := func(n, path string) v1.EnvVar {
		return v1.EnvVar{Name: n, ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: path}}}
	}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: v1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: v1.PodSpec{
					TerminationGracePeriodSeconds: ptr(int64(2)),
					TopologySpreadConstraints: []v1.TopologySpreadConstraint{{
						MaxSkew: 1, TopologyKey: "kubernetes.io/hostname", WhenUnsatisfiable: v1.DoNotSchedule,
						LabelSelector: &metav1.LabelSelector{MatchLabels: labels},
					}},
					Containers: []v1.Container{{
						Name: "echo", Image: LabpodImage, ImagePullPolicy: v1.PullNever,
						Args:  []string{"serve"},
						Env:   []v1.EnvVar{env("NODE_NAME", "spec.nodeName"), env("POD_NAME", "metadata.name")},
						Ports: []v1.ContainerPort{{ContainerPort: 8080}},
						ReadinessProbe: &v1.Probe{
							ProbeHandler:  v1.ProbeHandler{HTTPGet: &v1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}},
							PeriodSeconds: 1,
						},
					}},
				},
			},
		},
	}
	_, err := c.Admin.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var last string
	err = Poll(ctx, 200*time.Millisecond, func() (bool, error) {
		got, err := c.Admin.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		last = fmt.Sprintf("%d/%d ready", got.Status.ReadyReplicas, replicas)
		return got.Status.ReadyReplicas == replicas && got.Status.UpdatedReplicas == replicas, nil
	})
	if err != nil {
		pods, _ := c.Kubectl(context.Background(), "get", "pods", "-n", ns, "-o", "wide")
		return fmt.Errorf("deployment %s/%s (%s): %w\n%s", ns, name, last, err, pods)
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

func (c *Cluster) ensureNamespace(ctx context.Context, ns string) error {
	_, err := c.Admin.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}

// ExposeLB creates a LoadBalancer Service on port 80 for the pods of app
// (target 8080), with externalTrafficPolicy Local when local, and returns
// its address once vip-ccm assigned one.
func (c *Cluster) ExposeLB(ctx context.Context, ns, name, app string, local bool) (netip.Addr, error) {
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1.ServiceSpec{
			Type:     v1.ServiceTypeLoadBalancer,
			Selector: map[string]string{"app": app},
			Ports:    []v1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: v1.ProtocolTCP}},
		},
	}
	if local {
		svc.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
	}
	if _, err := c.Admin.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return netip.Addr{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var addr netip.Addr
	err := Poll(ctx, 100*time.Millisecond, func() (bool, error) {
		got, err := c.Admin.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, in := range got.Status.LoadBalancer.Ingress {
			if a, err := netip.ParseAddr(in.IP); err == nil {
				addr = a
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return addr, fmt.Errorf("service %s/%s got no address: %w", ns, name, err)
	}
	return addr, nil
}

// Get sends one HTTP GET from the client namespace to addr:port and returns
// the body.
func Get(ctx context.Context, addr netip.Addr, port int, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hc := &http.Client{Transport: &http.Transport{DialContext: dialerIn(ClientNS), DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(addr.String(), fmt.Sprint(port))+"/", nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("GET %s: %s", addr, resp.Status)
	}
	return string(b), nil
}

// Answer is labpod's reply parsed.
type Answer struct{ Node, Pod, Client string }

// ParseAnswer reads "node=<n> pod=<p> client=<ip>".
func ParseAnswer(s string) (Answer, error) {
	var a Answer
	for _, f := range strings.Fields(s) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "node":
			a.Node = v
		case "pod":
			a.Pod = v
		case "client":
			a.Client = v
		}
	}
	if a.Node == "" || a.Pod == "" || a.Client == "" {
		return a, fmt.Errorf("not a labpod answer: %q", s)
	}
	return a, nil
}

// AgentNamespace is where deploy/base runs vip-agent, and where its
// per-address Leases live.
const AgentNamespace = "kube-system"

// Owner returns the node holding addr's Lease ("" if none).
func (c *Cluster) Owner(ctx context.Context, addr netip.Addr) (string, error) {
	l, err := c.Admin.CoordinationV1().Leases(AgentNamespace).Get(ctx, lbsvc.AddressLeaseName(addr), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if l.Spec.HolderIdentity == nil {
		return "", nil
	}
	return *l.Spec.HolderIdentity, nil
}

// WaitOwner waits until addr's Lease has a holder and returns it; the
// error lists vip's Leases.
func (c *Cluster) WaitOwner(ctx context.Context, addr netip.Addr) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var owner string
	err := Poll(ctx, 100*time.Millisecond, func() (bool, error) {
		var err error
		owner, err = c.Owner(ctx, addr)
		return owner != "", err
	})
	if err != nil {
		leases, _ := c.Kubectl(context.Background(), "get", "leases", "-n", AgentNamespace)
		return "", fmt.Errorf("no holder of Lease %s in %s: %w\n%s", lbsvc.AddressLeaseName(addr), AgentNamespace, err, leases)
	}
	return owner, nil
}
