//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vip-lb/vip/e2e/lab"
)

// l2Lab starts a lab for a test and closes it in t.Cleanup, printing the
// programs' logs first if the test failed. VIP_E2E_KEEP=1 keeps the lab's
// folder (logs, state files).
func l2Lab(t testing.TB, o lab.Options) *lab.Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("e2e: needs root (network namespaces)")
	}
	if o.Logf == nil {
		o.Logf = t.Logf
	}
	o.KeepDir = os.Getenv("VIP_E2E_KEEP") == "1"
	// VIP_E2E_AGENT_ARGS adds flags to every agent, e.g. "--v=1" to debug.
	o.AgentArgs = append(o.AgentArgs, strings.Fields(os.Getenv("VIP_E2E_AGENT_ARGS"))...)
	// VIP_E2E_LIVENESS=link runs the agents with --liveness=link.
	if o.Liveness == "" {
		o.Liveness = os.Getenv("VIP_E2E_LIVENESS")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	l, err := lab.New(ctx, o)
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	t.Cleanup(func() {
		// A test failure shows the programs' logs; a benchmark fails for a
		// missed target, which its figures already explain.
		if _, isTest := t.(*testing.T); isTest && t.Failed() {
			t.Logf("lab logs (folder %s):\n%s", l.Dir, l.Logs(60))
		}
		if err := l.Close(); err != nil {
			t.Errorf("closing lab: %v", err)
		}
	})
	return l
}

// l2Ctx is a context for one step of a test.
func l2Ctx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// l2Service is a Service created by a test, with its address.
type l2Service struct {
	NS, Name string
	VIP      netip.Addr
}

func (s l2Service) String() string { return s.NS + "/" + s.Name + "=" + s.VIP.String() }

// l2Create creates Services and waits for their addresses.
func l2Create(t testing.TB, l *lab.Lab, ns string, names []string, opts ...lab.ServiceOption) []l2Service {
	t.Helper()
	ctx := l2Ctx(t, 2*time.Minute)
	for _, n := range names {
		if _, err := l.CreateService(ctx, ns, n, opts...); err != nil {
			t.Fatal(err)
		}
	}
	out := make([]l2Service, 0, len(names))
	for _, n := range names {
		addrs, err := l.WaitAddress(ctx, ns, n)
		if err != nil {
			t.Fatalf("%v\n%s", err, l.Logs(30))
		}
		if len(addrs) != 1 {
			t.Fatalf("Service %s/%s: want one address, got %v", ns, n, addrs)
		}
		out = append(out, l2Service{NS: ns, Name: n, VIP: addrs[0]})
	}
	return out
}

// l2Holders waits until every Service has a Lease holder and returns them
// by Service name.
func l2Holders(t testing.TB, l *lab.Lab, svcs []l2Service) map[string]string {
	t.Helper()
	ctx := l2Ctx(t, time.Minute)
	out := map[string]string{}
	for _, s := range svcs {
		h, err := l.WaitHolder(ctx, s.NS, s.Name, func(h string) bool { return h != "" })
		if err != nil {
			t.Fatalf("%v\n%s", err, l.Logs(30))
		}
		out[s.Name] = h
	}
	return out
}

// l2CurrentHolders reads the holders of the Services' Leases now.
func l2CurrentHolders(t testing.TB, l *lab.Lab, svcs []l2Service) map[string]string {
	t.Helper()
	ctx := l2Ctx(t, 30*time.Second)
	byNS := map[string]map[string]string{}
	out := map[string]string{}
	for _, s := range svcs {
		if byNS[s.NS] == nil {
			h, err := l.Holders(ctx, s.NS)
			if err != nil {
				t.Fatal(err)
			}
			byNS[s.NS] = h
		}
		out[s.Name] = byNS[s.NS][s.Name]
	}
	return out
}

// l2CheckServed checks, from the client, that each Service's VIP is bound
// on its holder only, that the client's neighbour entry points at the
// holder's MAC (learnt from the announcement, checked before any traffic)
// and that a TCP connection reaches the holder's listener. The node
// tolerate ("" = none) may still have the VIP bound (a crashed agent).
func l2CheckServed(t testing.TB, l *lab.Lab, svcs []l2Service, holders map[string]string, tolerate string) {
	t.Helper()
	ctx := l2Ctx(t, time.Minute)
	for _, s := range svcs {
		h := holders[s.Name]
		err := l.WaitBoundFunc(ctx, s.VIP, func(on []string) bool {
			return slices.Equal(on, []string{h}) || (tolerate != "" && len(on) == 2 &&
				slices.Contains(on, h) && slices.Contains(on, tolerate))
		})
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if err := l.WaitClientNeigh(ctx, s.VIP, h); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if _, err := l.WaitServedBy(ctx, s.VIP, lab.ServicePort, func(n string) bool { return n == h }); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// l2ByHolder groups Service names by holder.
func l2ByHolder(holders map[string]string) map[string][]string {
	out := map[string][]string{}
	for svc, h := range holders {
		out[h] = append(out[h], svc)
	}
	for _, v := range out {
		sort.Strings(v)
	}
	return out
}

// l2Pick returns the node holding the most Services, and those Services.
func l2Pick(holders map[string]string) (string, []string) {
	by := l2ByHolder(holders)
	nodes := slices.Sorted(maps.Keys(by))
	best := ""
	for _, n := range nodes {
		if n != "" && (best == "" || len(by[n]) > len(by[best])) {
			best = n
		}
	}
	return best, by[best]
}

// l2Find returns the Service called name.
func l2Find(svcs []l2Service, name string) l2Service {
	for _, s := range svcs {
		if s.Name == name {
			return s
		}
	}
	return l2Service{}
}

// l2CheckNoStray checks that every bound address is the VIP of one of the
// Services, bound on its Lease holder and nowhere else, and that every
// Service's VIP is bound exactly on its holder. It retries for a while, as
// moves may be in flight.
func l2CheckNoStray(t testing.TB, l *lab.Lab, svcs []l2Service) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		problem := l2StrayProblem(t, l, svcs)
		if problem == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("addresses do not match Lease holders: %s\n%s", problem, l.Logs(30))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func l2StrayProblem(t testing.TB, l *lab.Lab, svcs []l2Service) string {
	ctx := l2Ctx(t, 30*time.Second)
	bound, err := l.AllBound()
	if err != nil {
		t.Fatal(err)
	}
	// Every Service of the cluster may have its VIP bound on its holder;
	// svcs must.
	list, err := l.Admin.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var all []l2Service
	for _, sv := range list.Items {
		for _, a := range lab.Ingress(&sv) {
			all = append(all, l2Service{NS: sv.Namespace, Name: sv.Name, VIP: a})
		}
	}
	holders := map[string]string{}
	namespaces := []string{"default", lab.ScaleNamespace}
	for _, s := range all {
		if !slices.Contains(namespaces, s.NS) {
			namespaces = append(namespaces, s.NS)
		}
	}
	for _, ns := range namespaces {
		h, err := l.Holders(ctx, ns)
		if err != nil {
			t.Fatal(err)
		}
		for name, node := range h {
			holders[ns+"/"+name] = node
		}
	}
	byVIP := map[netip.Addr]l2Service{}
	for _, s := range all {
		byVIP[s.VIP] = s
	}
	where := map[netip.Addr][]string{}
	var problems []string
	for node, vips := range bound {
		for _, v := range vips {
			where[v] = append(where[v], node)
			s, ok := byVIP[v]
			if !ok {
				problems = append(problems, fmt.Sprintf("stray %s on %s", v, node))
				continue
			}
			if h := holders[s.NS+"/"+s.Name]; h != node {
				problems = append(problems, fmt.Sprintf("%s on %s but Lease held by %q", s, node, h))
			}
		}
	}
	for _, s := range svcs {
		if len(where[s.VIP]) != 1 {
			problems = append(problems, fmt.Sprintf("%s bound on %v", s, where[s.VIP]))
		}
	}
	sort.Strings(problems)
	return strings.Join(problems, "; ")
}

// l2WaitHome waits until every Service is held by the node in home again
// (rebalancing gives a Service back to its preferred node once that node
// has been alive for the settle time) and nothing is stray.
func l2WaitHome(t testing.TB, l *lab.Lab, svcs []l2Service, home map[string]string) {
	t.Helper()
	ctx := l2Ctx(t, 2*time.Minute)
	if err := l.WaitSettled(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	var cur map[string]string
	for {
		cur = l2CurrentHolders(t, l, svcs)
		if maps.Equal(cur, home) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("Services did not return to their preferred nodes: holders %v, want %v\n%s", cur, home, l.Logs(30))
		case <-time.After(200 * time.Millisecond):
		}
	}
	l2CheckNoStray(t, l, svcs)
}

// l2Events returns the messages of the Events of a Service with reason.
func l2Events(t testing.TB, l *lab.Lab, s l2Service, reason string) []string {
	t.Helper()
	ctx := l2Ctx(t, 30*time.Second)
	list, err := l.Admin.CoreV1().Events(s.NS).List(ctx, metav1.ListOptions{
		FieldSelector: "involvedObject.name=" + s.Name + ",reason=" + reason})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range list.Items {
		out = append(out, e.Message)
	}
	return out
}

// l2Restore brings a node back: port up, agent running.
func l2Restore(t testing.TB, l *lab.Lab, node string) {
	t.Helper()
	if err := l.RestorePort(node); err != nil {
		t.Error(err)
	}
	if n := l.Node(node); n != nil && !n.Agent.Running() {
		if err := l.StartAgent(l2Ctx(t, time.Minute), node); err != nil {
			t.Error(err)
		}
	}
}

// l2Names returns prefix-0 … prefix-(n-1).
func l2Names(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}

// l2Others returns the Service names not in names.
func l2Others(holders map[string]string, names []string) []string {
	var out []string
	for svc := range holders {
		if !slices.Contains(names, svc) {
			out = append(out, svc)
		}
	}
	sort.Strings(out)
	return out
}

// l2StableHolders waits until the holders of svcs stay the same for quiet
// (longer than the agents' rebalance settle time, so placement is final)
// and returns them.
func l2StableHolders(t testing.TB, l *lab.Lab, svcs []l2Service, quiet, timeout time.Duration) map[string]string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := l2CurrentHolders(t, l, svcs)
	since := time.Now()
	for time.Since(since) < quiet {
		if time.Now().After(deadline) {
			t.Fatalf("holders still moving after %v: %v", timeout, last)
		}
		time.Sleep(500 * time.Millisecond)
		now := l2CurrentHolders(t, l, svcs)
		if !maps.Equal(now, last) {
			last, since = now, time.Now()
		}
	}
	return last
}
