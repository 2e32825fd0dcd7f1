// Command demo tells vip's story in the namespace lab (e2e/lab): a real API
// server, vip-ccm, three nodes running vip-agent and a client. It creates a
// backend and a LoadBalancer Service, shows the address vip-ccm gave it,
// reaches it from the client, shows which node announces it, cuts that
// node off the network and shows the traffic continuing from the new owner,
// with the outage the client saw. Everything is removed at the end, also on
// failure or Ctrl-C. Run it as root through e2e/demo.sh (`make demo`).
package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vip-lb/vip/e2e/lab"
	"github.com/vip-lb/vip/pkg/lbsvc"
)

const (
	ns      = "default"
	svcName = "web"
)

func main() {
	binDir := flag.String("bin-dir", os.Getenv("VIP_BIN_DIR"), "folder with vip-agent, vip-ccm, etcd and kube-apiserver (default <repo>/bin)")
	clean := flag.Bool("clean-stale", false, "only remove namespaces left by crashed labs, then exit")
	flag.Parse()
	if *clean {
		if gone, err := lab.CleanStale(); err != nil {
			fmt.Fprintln(os.Stderr, "demo: cleaning stale namespaces:", err)
			os.Exit(1)
		} else if len(gone) > 0 {
			fmt.Println("removed namespaces of an interrupted run:", strings.Join(gone, " "))
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	d := &demo{binDir: *binDir, t0: time.Now()}
	err := d.run(ctx)
	if d.l != nil {
		d.say("cleaning up: stopping every program and deleting the namespaces")
		if cerr := d.l.Close(); cerr != nil {
			fmt.Fprintln(os.Stderr, "demo: cleanup:", cerr)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo FAILED at step %d (%s): %v\n", d.step, d.stepName, err)
		if ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "(interrupted)")
		}
		os.Exit(1)
	}
	fmt.Printf("\ndemo finished in %v\n", time.Since(d.t0).Round(100*time.Millisecond))
}

type demo struct {
	binDir   string
	t0       time.Time
	l        *lab.Lab
	step     int
	stepName string
}

const steps = 8

func (d *demo) begin(name string) {
	d.step++
	d.stepName = name
	fmt.Printf("\n[%d/%d] %s  (t=%v)\n", d.step, steps, name, time.Since(d.t0).Round(100*time.Millisecond))
}

func (d *demo) say(format string, args ...any) {
	fmt.Printf("      "+format+"\n", args...)
}

// show prints command output indented.
func (d *demo) show(out string) {
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		fmt.Println("      " + line)
	}
}

func (d *demo) run(ctx context.Context) error {
	d.begin("bringing up the lab: etcd + kube-apiserver + vip-ccm, vip-agent on node1..3, a client")
	l, err := lab.New(ctx, lab.Options{BinDir: d.binDir, Logf: func(f string, a ...any) {
		if strings.HasPrefix(f, "lab ") {
			d.say(f, a...)
		}
	}})
	if err != nil {
		return err
	}
	d.l = l
	d.say("namespaces %s-{sw,api,node1,node2,node3,client}; bridge 10.%d.0.0/16, fd00:%d::/64; no default routes", l.ID, l.X, l.X)
	d.say("API server %s (inside %s); agents run with the RBAC in deploy/agent/rbac.yaml", l.Env.Server(), l.API)
	d.say("address pool (ConfigMap kube-system/kubevip): cidr-global=10.%d.0.200/29,fd00:%d::200/125", l.X, l.X)
	d.show(d.kubectl(ctx, "get", "nodes", "-o", "wide"))

	d.begin("creating the backend: one responder per node answering with its node name (port 80)")
	if err := l.SetEndpoints(ctx, ns, svcName, "node1", "node2", "node3"); err != nil {
		return err
	}
	d.say("EndpointSlice %s/%s-lab lists the 3 replicas (node1, node2, node3)", ns, svcName)

	d.begin("creating LoadBalancer Service " + ns + "/" + svcName + " and waiting for its EXTERNAL-IP")
	if _, err := l.CreateService(ctx, ns, svcName); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	addrs, err := l.WaitAddress(wctx, ns, svcName)
	if err != nil {
		return d.withLogs(err)
	}
	vip := addrs[0]
	d.show(d.kubectl(ctx, "get", "svc", svcName, "-o", "wide"))

	d.begin("reaching http://" + vip.String() + "/ from the client namespace")
	owner, err := l.WaitHolder(wctx, ns, svcName, func(h string) bool { return h != "" })
	if err != nil {
		return d.withLogs(err)
	}
	answer, err := l.WaitServedBy(wctx, vip, lab.ServicePort, func(string) bool { return true })
	if err != nil {
		return d.withLogs(err)
	}
	d.curl(ctx, vip)
	d.say("answered by %s", answer)

	d.begin("who announces it: the holder of Lease " + lab.AgentNamespace + "/" + lbsvc.AddressLeaseName(vip) + " (one Lease per address)")
	d.show(d.kubectl(ctx, "get", "lease", lbsvc.AddressLeaseName(vip), "-n", lab.AgentNamespace, "-o",
		"custom-columns=LEASE:.metadata.name,HOLDER:.spec.holderIdentity,REASON:.metadata.annotations.vip\\.io/reason"))
	if nb, err := l.ClientNeigh(vip); err == nil {
		d.say("client's neighbour entry: %s -> %s %s (%s's eth0)", vip, nb.MAC, nb.State, owner)
	}
	d.show(d.events(ctx))
	if answer != owner {
		return fmt.Errorf("the client was answered by %s but the Lease holder is %s", answer, owner)
	}

	d.begin("killing the owner: cutting " + owner + "'s network port, while the client probes every 10 ms")
	p := l.StartProbe(vip, lab.ServicePort, 10*time.Millisecond, 50*time.Millisecond)
	time.Sleep(500 * time.Millisecond)
	cut := time.Now()
	if err := l.CutPort(owner); err != nil {
		p.Stop()
		return err
	}
	d.say("%s is off the network (ip -n %s link set p-%s down)", owner, l.SW, owner)
	next, err := l.WaitHolder(wctx, ns, svcName, func(h string) bool { return h != "" && h != owner })
	if err != nil {
		p.Stop()
		return d.withLogs(err)
	}
	tLease := time.Since(cut)
	if _, err := l.WaitServedBy(wctx, vip, lab.ServicePort, func(n string) bool { return n == next }); err != nil {
		p.Stop()
		return d.withLogs(err)
	}
	time.Sleep(300 * time.Millisecond)
	rs := p.Stop()
	outage, fails, ok := lab.Outage(rs, next)
	if !ok {
		return fmt.Errorf("the client never reached the new owner %s", next)
	}
	d.say("%s's heartbeat went stale; %s took the Lease %v after the cut and announced %s", owner, next, tLease.Round(time.Millisecond), vip)

	d.begin("traffic continues from the new owner")
	d.say("client-observed outage: %v (first failed probe -> first answer from %s; %d of %d probes failed)",
		outage.Round(time.Millisecond), next, fails, len(rs))
	for i := 0; i < 3; i++ {
		d.curl(ctx, vip)
	}
	if nb, err := l.ClientNeigh(vip); err == nil {
		d.say("client's neighbour entry now: %s -> %s (%s's eth0, from its gratuitous ARP)", vip, nb.MAC, next)
	}
	d.show(d.kubectl(ctx, "get", "lease", lbsvc.AddressLeaseName(vip), "-n", lab.AgentNamespace, "-o",
		"custom-columns=LEASE:.metadata.name,HOLDER:.spec.holderIdentity,REASON:.metadata.annotations.vip\\.io/reason"))
	d.show(d.events(ctx))

	d.begin("bringing " + owner + " back")
	if err := l.RestorePort(owner); err != nil {
		return err
	}
	if err := l.WaitSettled(ctx, time.Minute); err != nil {
		return err
	}
	back := time.Now()
	d.say("%s is alive again; it is the preferred node of %s, which moves back once %s has been up for the settle time (10 s by default)",
		owner, svcName, owner)
	bctx, bcancel := context.WithTimeout(ctx, time.Minute)
	defer bcancel()
	if _, err := l.WaitHolder(bctx, ns, svcName, func(h string) bool { return h == owner }); err != nil {
		return d.withLogs(err)
	}
	if _, err := l.WaitServedBy(bctx, vip, lab.ServicePort, func(n string) bool { return n == owner }); err != nil {
		return d.withLogs(err)
	}
	d.say("handed back to %s %v after it returned (withdrawn by %s first, then announced by %s)",
		owner, time.Since(back).Round(100*time.Millisecond), next, owner)
	d.curl(ctx, vip)
	return nil
}

// withLogs adds the tail of the programs' logs to err.
func (d *demo) withLogs(err error) error {
	if d.l == nil {
		return err
	}
	return fmt.Errorf("%w\n\nlast log lines:\n%s", err, d.l.Logs(15))
}

// kubectl runs kubectl inside the api namespace with the admin kubeconfig;
// without kubectl it prints the same columns itself.
func (d *demo) kubectl(ctx context.Context, args ...string) string {
	l := d.l
	if path, err := exec.LookPath("kubectl"); err == nil {
		full := append([]string{"netns", "exec", l.API, path, "--kubeconfig", filepath.Join(l.Dir, "admin.kubeconfig"), "-n", ns}, args...)
		out, err := exec.CommandContext(ctx, "ip", full...).CombinedOutput()
		if err == nil {
			return "$ kubectl " + strings.Join(args, " ") + "\n" + string(out)
		}
	}
	return d.print(ctx, args)
}

// print is the fallback for kubectl: the same tables from the Go client.
func (d *demo) print(ctx context.Context, args []string) string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 4, 3, ' ', 0)
	cs := d.l.Admin
	switch {
	case len(args) >= 2 && args[1] == "svc":
		svc, err := cs.CoreV1().Services(ns).Get(ctx, args[2], metav1.GetOptions{})
		if err != nil {
			return err.Error()
		}
		ext := "<pending>"
		if a := lab.Ingress(svc); len(a) > 0 {
			var s []string
			for _, x := range a {
				s = append(s, x.String())
			}
			ext = strings.Join(s, ",")
		}
		var ports []string
		for _, p := range svc.Spec.Ports {
			ports = append(ports, fmt.Sprintf("%d:%d/%s", p.Port, p.NodePort, p.Protocol))
		}
		fmt.Fprintln(w, "NAME\tTYPE\tCLUSTER-IP\tEXTERNAL-IP\tPORT(S)\tAGE")
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", svc.Name, svc.Spec.Type, svc.Spec.ClusterIP, ext,
			strings.Join(ports, ","), time.Since(svc.CreationTimestamp.Time).Round(time.Second))
	case len(args) >= 2 && args[1] == "lease":
		leaseNS := ns
		if len(args) >= 5 && args[3] == "-n" {
			leaseNS = args[4]
		}
		le, err := cs.CoordinationV1().Leases(leaseNS).Get(ctx, args[2], metav1.GetOptions{})
		if err != nil {
			return err.Error()
		}
		h := ""
		if le.Spec.HolderIdentity != nil {
			h = *le.Spec.HolderIdentity
		}
		fmt.Fprintln(w, "LEASE\tHOLDER\tREASON")
		fmt.Fprintf(w, "%s\t%s\t%s\n", le.Name, h, le.Annotations["vip.io/reason"])
	case len(args) >= 2 && args[1] == "nodes":
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return err.Error()
		}
		fmt.Fprintln(w, "NAME\tINTERNAL-IP")
		for _, n := range nodes.Items {
			var ips []string
			for _, a := range n.Status.Addresses {
				if a.Type == v1.NodeInternalIP {
					ips = append(ips, a.Address)
				}
			}
			fmt.Fprintf(w, "%s\t%s\n", n.Name, strings.Join(ips, ","))
		}
	}
	_ = w.Flush()
	return b.String()
}

// events lists the Service's Events, oldest first.
func (d *demo) events(ctx context.Context) string {
	list, err := d.l.Admin.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + svcName})
	if err != nil {
		return err.Error()
	}
	sort.Slice(list.Items, func(i, j int) bool {
		return eventTime(list.Items[i]).Before(eventTime(list.Items[j]))
	})
	var b strings.Builder
	b.WriteString("Events on the Service:\n")
	w := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "  REASON\tFROM\tMESSAGE")
	for _, e := range list.Items {
		from := e.Source.Component
		if e.Source.Host != "" {
			from += "/" + e.Source.Host
		}
		if from == "" {
			from = e.ReportingController
		}
		fmt.Fprintf(w, "  %s\t%s\t%s\n", e.Reason, from, e.Message)
	}
	_ = w.Flush()
	return b.String()
}

func eventTime(e v1.Event) time.Time {
	switch {
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	}
	return e.CreationTimestamp.Time
}

// curl fetches the VIP from the client namespace, with curl if present.
func (d *demo) curl(ctx context.Context, vip netip.Addr) {
	l := d.l
	url := "http://" + netip.AddrPortFrom(vip, lab.ServicePort).String() + "/"
	if path, err := exec.LookPath("curl"); err == nil {
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", l.Client, path, "-sS", "-m", "2", url).CombinedOutput()
		d.say("client$ curl %s  ->  %s", url, strings.TrimSpace(string(out)))
		if err == nil {
			return
		}
	}
	got, err := l.ClientGet(ctx, vip, lab.ServicePort, time.Second)
	if err != nil {
		got = "error: " + err.Error()
	}
	d.say("client: GET %s  ->  %s", url, got)
}
