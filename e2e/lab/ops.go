package lab

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vip-lb/vip/pkg/lbsvc"
)

// ClientGet connects from the client namespace to vip:port within timeout,
// sends an HTTP request and returns the responder's answer (its node name).
func (l *Lab) ClientGet(ctx context.Context, vip netip.Addr, port int, timeout time.Duration) (string, error) {
	return l.GetFrom(ctx, l.Client, vip, port, timeout)
}

// GetFrom is ClientGet from any lab namespace.
func (l *Lab) GetFrom(ctx context.Context, ns string, vip netip.Addr, port int, timeout time.Duration) (string, error) {
	var c net.Conn
	err := InNetns(ns, func() error {
		d := net.Dialer{Timeout: timeout}
		var err error
		c, err = d.DialContext(ctx, "tcp", netip.AddrPortFrom(vip, uint16(port)).String())
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout + 250*time.Millisecond))
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\nHost: lab\r\n\r\n"); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	if err != nil {
		return "", err
	}
	s := string(b)
	i := strings.Index(s, "\r\n\r\n")
	if !strings.HasPrefix(s, "HTTP/1.") || i < 0 {
		return "", fmt.Errorf("unexpected answer %q", s)
	}
	return strings.TrimSpace(s[i+4:]), nil
}

// WaitServedBy waits until the client reaches vip:port and is answered by
// a node satisfying ok; it returns that node.
func (l *Lab) WaitServedBy(ctx context.Context, vip netip.Addr, port int, ok func(string) bool) (string, error) {
	var node string
	var last error
	err := poll(ctx, 20*time.Millisecond, func() (bool, error) {
		node, last = l.ClientGet(ctx, vip, port, 200*time.Millisecond)
		return last == nil && ok(node), nil
	})
	if err != nil {
		return node, fmt.Errorf("client to %s: last answer %q, last error %v: %w", vip, node, last, err)
	}
	return node, nil
}

// Neighbour is the client's neighbour entry for an address.
type Neighbour struct {
	MAC   string // lladdr ("" when none)
	State string // REACHABLE, STALE, FAILED, …
}

// ClientNeigh returns the client's neighbour entry for addr (zero when
// there is none).
func (l *Lab) ClientNeigh(addr netip.Addr) (Neighbour, error) {
	out, err := ip("-n", l.Client, "neigh", "show", addr.String(), "dev", "eth0")
	if err != nil {
		return Neighbour{}, err
	}
	var n Neighbour
	f := strings.Fields(out)
	for i := 0; i < len(f); i++ {
		if f[i] == "lladdr" && i+1 < len(f) {
			n.MAC = strings.ToLower(f[i+1])
			i++
		}
	}
	if len(f) > 0 {
		n.State = f[len(f)-1]
	}
	return n, nil
}

// WaitClientNeigh waits until the client's neighbour entry for addr points
// at node's MAC.
func (l *Lab) WaitClientNeigh(ctx context.Context, addr netip.Addr, node string) error {
	n := l.Node(node)
	if n == nil {
		return fmt.Errorf("no node %q", node)
	}
	var last Neighbour
	err := poll(ctx, 20*time.Millisecond, func() (bool, error) {
		var err error
		last, err = l.ClientNeigh(addr)
		return err == nil && strings.EqualFold(last.MAC, n.MAC), nil
	})
	if err != nil {
		owner := "nobody"
		if o := l.NodeByMAC(last.MAC); o != nil {
			owner = o.Name
		}
		return fmt.Errorf("client neighbour entry for %s: %q %s (%s), want %s (%s): %w",
			addr, last.MAC, last.State, owner, n.MAC, node, err)
	}
	return nil
}

// ClientPing pings addr once from the client (IPv4 or IPv6).
func (l *Lab) ClientPing(ctx context.Context, addr netip.Addr) error {
	_, err := run(ctx, "ip", "netns", "exec", l.Client, "ping", "-n", "-c1", "-W1", addr.String())
	return err
}

// NodeVIPs returns the addresses on a node's eth0 other than its own and
// link-local ones: the virtual IPs bound there.
func (l *Lab) NodeVIPs(node string) ([]netip.Addr, error) {
	n := l.Node(node)
	if n == nil {
		return nil, fmt.Errorf("no node %q", node)
	}
	out, err := ip("-j", "-n", n.NS, "addr", "show", "dev", "eth0")
	if err != nil {
		return nil, err
	}
	var links []struct {
		AddrInfo []struct {
			Local string `json:"local"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		return nil, fmt.Errorf("ip -j addr in %s: %w", n.NS, err)
	}
	var vips []netip.Addr
	for _, lk := range links {
		for _, a := range lk.AddrInfo {
			addr, err := netip.ParseAddr(a.Local)
			if err != nil || addr == n.IP4 || addr == n.IP6 || addr.IsLinkLocalUnicast() {
				continue
			}
			vips = append(vips, addr)
		}
	}
	slices.SortFunc(vips, netip.Addr.Compare)
	return vips, nil
}

// BoundOn returns the nodes that have vip on eth0.
func (l *Lab) BoundOn(vip netip.Addr) ([]string, error) {
	var out []string
	for _, n := range l.Nodes {
		vips, err := l.NodeVIPs(n.Name)
		if err != nil {
			return nil, err
		}
		if slices.Contains(vips, vip) {
			out = append(out, n.Name)
		}
	}
	return out, nil
}

// AllBound returns, for every node, the virtual IPs bound on it.
func (l *Lab) AllBound() (map[string][]netip.Addr, error) {
	out := map[string][]netip.Addr{}
	for _, n := range l.Nodes {
		vips, err := l.NodeVIPs(n.Name)
		if err != nil {
			return nil, err
		}
		out[n.Name] = vips
	}
	return out, nil
}

// WaitBound waits until vip is bound on exactly the nodes in want (none
// when want is empty).
func (l *Lab) WaitBound(ctx context.Context, vip netip.Addr, want ...string) error {
	want = slices.Sorted(slices.Values(want))
	err := l.WaitBoundFunc(ctx, vip, func(on []string) bool { return slices.Equal(on, want) })
	if err != nil {
		return fmt.Errorf("%w (want %v)", err, want)
	}
	return nil
}

// WaitBoundFunc waits until the sorted list of nodes that have vip bound
// satisfies ok.
func (l *Lab) WaitBoundFunc(ctx context.Context, vip netip.Addr, ok func(on []string) bool) error {
	var got []string
	err := poll(ctx, 50*time.Millisecond, func() (bool, error) {
		var err error
		got, err = l.BoundOn(vip)
		return err == nil && ok(got), nil
	})
	if err != nil {
		return fmt.Errorf("%s bound on %v: %w", vip, got, err)
	}
	return nil
}

// CutPort takes a node's bridge port down: the node is cut off the network
// (it keeps running).
func (l *Lab) CutPort(node string) error {
	_, err := ip("-n", l.SW, "link", "set", "p-"+node, "down")
	return err
}

// RestorePort brings a node's bridge port back up.
func (l *Lab) RestorePort(node string) error {
	_, err := ip("-n", l.SW, "link", "set", "p-"+node, "up")
	return err
}

// StopAgent signals a node's agent (SIGTERM: graceful; SIGKILL: crash) and
// waits for it to exit.
func (l *Lab) StopAgent(node string, sig syscall.Signal) error {
	n := l.Node(node)
	if n == nil {
		return fmt.Errorf("no node %q", node)
	}
	return n.Agent.Stop(sig, 20*time.Second)
}

// StartAgent starts a node's agent again and waits until it is ready.
func (l *Lab) StartAgent(ctx context.Context, node string) error {
	n := l.Node(node)
	if n == nil {
		return fmt.Errorf("no node %q", node)
	}
	if err := n.Agent.Start(); err != nil {
		return err
	}
	return l.WaitAgentReady(ctx, node)
}

// agentURL is a URL on a node's metrics server.
func (l *Lab) agentURL(n *Node, path string) string {
	return fmt.Sprintf("http://%s%s", net.JoinHostPort(n.IP4.String(), strconv.Itoa(MetricsPort)), path)
}

// agentGet fetches a path from a node's metrics server, from the api
// namespace.
func (l *Lab) agentGet(ctx context.Context, n *Node, path string) (int, []byte, error) {
	tr := &http.Transport{DialContext: DialerIn(l.API), DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, l.agentURL(n, path), nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// WaitAgentReady waits until a node's agent answers /readyz with 200.
func (l *Lab) WaitAgentReady(ctx context.Context, node string) error {
	n := l.Node(node)
	var last string
	err := poll(ctx, 50*time.Millisecond, func() (bool, error) {
		if !n.Agent.Running() {
			return false, fmt.Errorf("%s exited: %w\n%s", n.Agent.Name, n.Agent.ExitErr(), n.Agent.Tail(30))
		}
		code, body, err := l.agentGet(ctx, n, "/readyz")
		if err != nil {
			last = err.Error()
			return false, nil
		}
		last = fmt.Sprintf("%d %s", code, strings.TrimSpace(string(body)))
		return code == http.StatusOK, nil
	})
	if err != nil {
		return fmt.Errorf("%s not ready (last: %s): %w", n.Agent.Name, last, err)
	}
	return nil
}

// AgentMetric sums a metric family of a node's agent over the samples whose
// labels satisfy match (nil = all).
func (l *Lab) AgentMetric(ctx context.Context, node, name string, match func(map[string]string) bool) (float64, error) {
	n := l.Node(node)
	if n == nil {
		return 0, fmt.Errorf("no node %q", node)
	}
	code, body, err := l.agentGet(ctx, n, "/metrics")
	if err != nil {
		return 0, err
	}
	if code != http.StatusOK {
		return 0, fmt.Errorf("%s /metrics: %d", n.Agent.Name, code)
	}
	return sumMetric(strings.NewReader(string(body)), name, match)
}

// heartbeatAges returns, as one agent sees them, the heartbeat age of each node.
func (l *Lab) heartbeatAges(ctx context.Context, node string) (map[string]float64, error) {
	n := l.Node(node)
	code, body, err := l.agentGet(ctx, n, "/metrics")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("%s /metrics: %d", n.Agent.Name, code)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, "vip_agent_heartbeat_age_seconds{")
		if !ok {
			continue
		}
		end := strings.IndexByte(rest, '}')
		if end < 0 {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest[end+1:]), 64)
		if err != nil {
			continue
		}
		out[parseLabels(rest[:end])["node"]] = v
	}
	return out, nil
}

// WaitSettled waits until every running agent is ready, its heartbeat
// says so (peers count a node as a candidate only then: a Service created
// earlier would be placed on the nodes that happened to be ready first and
// move when rebalancing runs), and each agent sees a fresh heartbeat from
// every running agent (itself included) after that.
func (l *Lab) WaitSettled(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var running []string
	for _, n := range l.Nodes {
		if n.Agent.Running() {
			running = append(running, n.Name)
		}
	}
	for _, name := range running {
		if err := l.WaitAgentReady(ctx, name); err != nil {
			return fmt.Errorf("lab not settled: %w\n%s", err, l.Logs(20))
		}
	}
	var last string
	if err := poll(ctx, 100*time.Millisecond, func() (bool, error) {
		for _, name := range running {
			hb, err := l.Admin.CoordinationV1().Leases(AgentNamespace).Get(ctx, lbsvc.HeartbeatLeasePrefix+name, metav1.GetOptions{})
			if err != nil || hb.Annotations[lbsvc.AnnotationNodeReady] != "true" {
				last = fmt.Sprintf("%s's heartbeat does not say ready yet (%v)", name, err)
				return false, nil
			}
		}
		return true, nil
	}); err != nil {
		return fmt.Errorf("lab not settled (%s): %w\n%s", last, err, l.Logs(20))
	}
	// The ready heartbeats are written; peers see them within one watch
	// delivery. Ask for fresh heartbeat ages twice, a heartbeat period
	// apart, so every view includes them.
	fresh := 0
	err := poll(ctx, 250*time.Millisecond, func() (bool, error) {
		for _, obs := range running {
			ages, err := l.heartbeatAges(ctx, obs)
			if err != nil {
				last = err.Error()
				return false, nil
			}
			for _, peer := range running {
				age, ok := ages[peer]
				if !ok || age > 0.5 {
					last = fmt.Sprintf("%s sees %s's heartbeat age %v (known %v)", obs, peer, age, ok)
					fresh = 0
					return false, nil
				}
			}
		}
		fresh++
		return fresh >= 2, nil
	})
	if err != nil {
		return fmt.Errorf("lab not settled (%s): %w\n%s", last, err, l.Logs(20))
	}
	return nil
}

// StopAPIServer kills kube-apiserver (etcd keeps running).
func (l *Lab) StopAPIServer() error { return l.Env.StopAPIServer() }

// StartAPIServer starts kube-apiserver again and waits until it is ready.
func (l *Lab) StartAPIServer(ctx context.Context) error { return l.Env.StartAPIServer(ctx) }

// ProbeResult is one client probe.
type ProbeResult struct {
	At   time.Time     // when the connection attempt began
	Took time.Duration // until answer or failure
	Node string        // who answered ("" on failure)
	Err  error
}

// Prober probes a VIP from the client namespace at a fixed interval, each
// probe in its own goroutine (so a slow one does not delay the next).
type Prober struct {
	stop chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	res  []ProbeResult
}

// StartProbe probes vip:port every interval; each probe's connect times
// out after timeout. Stop ends it and returns the results by start time.
func (l *Lab) StartProbe(vip netip.Addr, port int, interval, timeout time.Duration) *Prober {
	p := &Prober{stop: make(chan struct{})}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			p.wg.Add(1)
			go func(at time.Time) {
				defer p.wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), timeout+time.Second)
				defer cancel()
				node, err := l.ClientGet(ctx, vip, port, timeout)
				r := ProbeResult{At: at, Took: time.Since(at), Node: node, Err: err}
				p.mu.Lock()
				p.res = append(p.res, r)
				p.mu.Unlock()
			}(time.Now())
			select {
			case <-p.stop:
				return
			case <-t.C:
			}
		}
	}()
	return p
}

// Results returns the results so far, by start time.
func (p *Prober) Results() []ProbeResult {
	p.mu.Lock()
	out := slices.Clone(p.res)
	p.mu.Unlock()
	slices.SortFunc(out, func(a, b ProbeResult) int { return a.At.Compare(b.At) })
	return out
}

// Stop ends probing, waits for probes in flight and returns every result.
func (p *Prober) Stop() []ProbeResult {
	close(p.stop)
	p.wg.Wait()
	return p.Results()
}

// Outage measures the client-observed outage in probe results (sorted by
// start time): from the first failed probe of the outage to the first
// probe answered by newOwner. The outage's first failed probe is the first
// failure after the last success that precedes that answer, so an isolated
// failure earlier on (a probe starved of CPU) does not count. Zero when no
// probe failed in between; ok is false when newOwner never answered.
// failures counts the failed probes in the outage.
func Outage(rs []ProbeResult, newOwner string) (outage time.Duration, failures int, ok bool) {
	// j: the first answer from newOwner that follows a failure or an
	// answer from another node.
	j := -1
	for i := 1; i < len(rs) && j < 0; i++ {
		if rs[i].Err == nil && rs[i].Node == newOwner && (rs[i-1].Err != nil || rs[i-1].Node != newOwner) {
			j = i
		}
	}
	if j < 0 {
		return 0, 0, false
	}
	start := j
	for start > 0 && rs[start-1].Err != nil {
		start--
	}
	failures = j - start
	if failures == 0 {
		return 0, 0, true
	}
	return rs[j].At.Sub(rs[start].At), failures, true
}

// Failures counts failed probes.
func Failures(rs []ProbeResult) int {
	n := 0
	for _, r := range rs {
		if r.Err != nil {
			n++
		}
	}
	return n
}

// ArpingMACs sends count ARP requests for addr from the client namespace
// (iputils arping) and returns the distinct MACs that answered, in order of
// first reply.
func (l *Lab) ArpingMACs(ctx context.Context, addr netip.Addr, count int) ([]string, error) {
	out, err := l.Exec(ctx, l.Client, "arping", "-I", "eth0", "-c", strconv.Itoa(count), "-w", strconv.Itoa(count+2), addr.String())
	macs := parseArping(out)
	if err != nil && len(macs) == 0 {
		return nil, fmt.Errorf("arping %s: %w: %s", addr, err, out)
	}
	return macs, nil
}

// parseArping returns the distinct MACs of iputils arping's reply lines
// ("Unicast reply from 10.1.0.200 [02:00:0A:01:00:0B]  0.6ms").
func parseArping(out string) []string {
	var macs []string
	for _, line := range strings.Split(out, "\n") {
		if !strings.Contains(line, "reply from") {
			continue
		}
		i, j := strings.Index(line, "["), strings.Index(line, "]")
		if i < 0 || j < i {
			continue
		}
		mac := strings.ToLower(line[i+1 : j])
		if !slices.Contains(macs, mac) {
			macs = append(macs, mac)
		}
	}
	return macs
}
