//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vip-lb/vip/e2e/lab"
)

// slowProxy forwards TCP connections to the API server, delaying every
// chunk sent towards the server by a fixed time: each request then takes
// that much longer, while throughput is unchanged. It listens in the API
// server's namespace, on its address.
type slowProxy struct {
	ln    net.Listener
	delay time.Duration
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

func startSlowProxy(l *lab.Lab, delay time.Duration) (*slowProxy, error) {
	p := &slowProxy{delay: delay}
	upstream := strings.TrimPrefix(l.Env.Server(), "https://")
	err := lab.InNetns(l.API, func() error {
		var err error
		p.ln, err = net.Listen("tcp", net.JoinHostPort(l.Env.Address(), "0"))
		return err
	})
	if err != nil {
		return nil, err
	}
	dial := lab.DialerIn(l.API)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := p.ln.Accept()
			if err != nil {
				return
			}
			u, err := dial(context.Background(), "tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			p.wg.Add(2)
			go func() { defer p.wg.Done(); p.pipe(u, c, p.delay) }()
			go func() { defer p.wg.Done(); p.pipe(c, u, 0) }()
		}
	}()
	return p, nil
}

// URL is the proxy's address as an API server URL.
func (p *slowProxy) URL() string { return "https://" + p.ln.Addr().String() }

// pipe copies src to dst, each chunk no earlier than delay after it was
// read.
func (p *slowProxy) pipe(dst, src net.Conn, delay time.Duration) {
	defer dst.Close()
	type chunk struct {
		at   time.Time
		data []byte
	}
	ch := make(chan chunk, 1024)
	go func() {
		defer close(ch)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				ch <- chunk{time.Now(), buf[:n]}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range ch {
		if d := time.Until(c.at.Add(delay)); d > 0 {
			time.Sleep(d)
		}
		if _, err := dst.Write(c.data); err != nil {
			_, _ = io.Copy(io.Discard, src)
			return
		}
	}
}

func (p *slowProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// pointKubeconfigs rewrites the programs' kubeconfigs to use server
// instead of from and restarts vip-ccm and every agent (SIGTERM, as a
// rolling update would).
func (s *resSuite) pointKubeconfigs(t *testing.T, from, to string) {
	t.Helper()
	l := s.l
	for _, f := range []string{"vip-agent.kubeconfig", "vip-ccm.kubeconfig"} {
		path := filepath.Join(l.Dir, f)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), from) {
			t.Fatalf("%s does not name %s", path, from)
		}
		if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(b), from, to)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s.restartCCM(t)
	for _, n := range l.Nodes {
		if err := l.StopAgent(n.Name, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := l.StartAgent(l2Ctx(t, time.Minute), n.Name); err != nil {
			t.Fatal(err)
		}
	}
}

// stableHolders waits until the steady Services' holders stay the same for
// quiet and returns them.
func (s *resSuite) stableHolders(t *testing.T, quiet, timeout time.Duration) map[string]string {
	t.Helper()
	return l2StableHolders(t, s.l, s.steady, quiet, timeout)
}

// slowAPI: every request to the API server takes 300 ms longer (vip-ccm
// and the agents go through a delaying proxy). Heartbeats (200 ms period,
// 800 ms timeout) then need more than their period, yet no node may be
// taken for dead: the VIPs stay where they are and keep answering, and a
// new Service still gets its address and is served.
func (s *resSuite) slowAPI(t *testing.T, row *resRow) {
	l := s.l
	const delay = 150 * time.Millisecond
	px, err := startSlowProxy(l, delay)
	if err != nil {
		t.Fatal(err)
	}
	defer px.close()
	direct := l.Env.Server()
	s.pointKubeconfigs(t, direct, px.URL())
	defer s.pointKubeconfigs(t, px.URL(), direct)
	if err := l.WaitSettled(l2Ctx(t, 2*time.Minute), 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	// The agents were just restarted one by one: let rebalancing finish
	// (holders unchanged for 12 s, longer than the settle time) first.
	before := s.stableHolders(t, 12*time.Second, 2*time.Minute)
	p, _ := s.probeSteady()
	time.Sleep(15 * time.Second)
	t0 := time.Now()
	sv := l2Create(t, l, lab.ScaleNamespace, []string{fmt.Sprintf("slow-%d", s.n)})
	s.n++
	row.note("with %v added to every request: new Service addressed in %v", delay, time.Since(t0).Round(time.Millisecond))
	l2CheckServed(t, l, sv, l2Holders(t, l, sv), "")
	row.note("served %v after its creation", time.Since(t0).Round(time.Millisecond))
	noFailures(t, row, p.Stop(), "API server slow")
	after := l2CurrentHolders(t, l, s.steady)
	moved := 0
	for k, v := range before {
		if after[k] != v {
			moved++
		}
	}
	if moved > 0 {
		t.Errorf("%d of %d steady Services changed owner while the API server was slow: %v → %v", moved, len(before), before, after)
	}
	// The agents were restarted for this scenario: their counters start at 0.
	s.noFences(t, row, nil)
	l2DeleteAll(t, l, sv)
}
