package agent

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"
)

// A probe listens to the link for most of its 300 ms budget. It runs beside
// the workers, not in one: a worker that waited for it could reconcile
// nothing else meanwhile, and a burst of new addresses would queue behind
// each other's probes (8 workers finish at most 8 probes per 300 ms). The
// reconcile that needs a probe starts it and returns; the probe's end
// reconciles the address again, which then reads the answer.

// maxProbes bounds the probes running at once (each holds an AF_PACKET
// socket that sees every ARP or neighbour frame on its interface); more
// wait for a slot.
const maxProbes = 32

// probeFresh is how long a finished probe's answer is used: a reconcile
// that comes later (a long backlog) asks the link again.
const probeFresh = 5 * time.Second

// errProbing: the address's probe is running; the reconcile ends without
// announcing and the probe's end reconciles the address again.
var errProbing = errors.New("probing the link before the first announcement")

// probeRun is one probe of an address, running or finished.
type probeRun struct {
	done bool
	mac  net.HardwareAddr
	err  error
	at   time.Time // finished
}

// probes runs the probes of addresses in the background.
type probes struct {
	mu    sync.Mutex
	runs  map[netip.Addr]*probeRun
	slots chan struct{}
	wg    sync.WaitGroup
	// ctx ends with the agent's Run: a probe then stops listening.
	ctx    context.Context
	cancel context.CancelFunc
}

func newProbes() *probes {
	ctx, cancel := context.WithCancel(context.Background())
	return &probes{runs: map[netip.Addr]*probeRun{}, slots: make(chan struct{}, maxProbes), ctx: ctx, cancel: cancel}
}

// probeResult returns the answer of addr's finished probe (and forgets it),
// or starts a probe of addr on iface, if none runs, and returns ok=false:
// the address is enqueued again when the probe ends.
func (a *Agent) probeResult(addr netip.Addr, iface string) (mac net.HardwareAddr, err error, ok bool) {
	p := a.probing
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.runs[addr]
	if r != nil && r.done {
		delete(p.runs, addr)
		if a.o.Clock.Since(r.at) <= probeFresh {
			return r.mac, r.err, true
		}
		r = nil
	}
	if r == nil {
		r = &probeRun{}
		p.runs[addr] = r
		p.wg.Add(1)
		go a.runProbe(addr, iface, r)
	}
	return nil, nil, false
}

// runProbe probes addr, keeps the answer for the next reconcile and
// enqueues it, unless the probe was forgotten meanwhile.
func (a *Agent) runProbe(addr netip.Addr, iface string, r *probeRun) {
	p := a.probing
	defer p.wg.Done()
	select {
	case p.slots <- struct{}{}:
	case <-p.ctx.Done():
		return
	}
	t0 := a.o.Clock.Now()
	mac, err := a.o.Prober.Probe(p.ctx, addr, iface)
	<-p.slots
	a.metrics.probe(a.o.Clock.Since(t0))
	p.mu.Lock()
	current := p.runs[addr] == r
	if current {
		r.done, r.mac, r.err, r.at = true, mac, err, a.o.Clock.Now()
	}
	p.mu.Unlock()
	if current {
		a.queue.Add(addrKey(addr))
	}
}

// forget drops addr's probe, running or finished: its answer is not used.
func (p *probes) forget(addr netip.Addr) {
	p.mu.Lock()
	delete(p.runs, addr)
	p.mu.Unlock()
}

// stop ends the running probes and waits for them.
func (p *probes) stop() {
	p.cancel()
	p.wg.Wait()
}
