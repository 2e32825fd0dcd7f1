package l2conn

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/mdlayher/packet"
	"k8s.io/utils/clock"
)

// Defaults for a burst.
const (
	// DefaultCount is the number of announcement rounds in a burst.
	DefaultCount = 3
	// DefaultInterval is the pause between two rounds of a burst.
	DefaultInterval = 150 * time.Millisecond
)

// Sentinel errors.
var (
	// ErrClosed is returned when a Conn or Pool is used after Close.
	ErrClosed = errors.New("connection closed")
	// ErrNotEthernet is returned for an interface without a 6-byte hardware address.
	ErrNotEthernet = errors.New("interface has no Ethernet hardware address")
)

// Build returns the frames that announce vip from hardware address hw.
type Build func(hw net.HardwareAddr, vip netip.Addr) ([][]byte, error)

// Hooks are optional callbacks; nil fields are skipped.
type Hooks struct {
	// Sent is called with the number of frames written by each round.
	Sent func(frames int)
	// Failed is called when a round that runs after Burst returned fails.
	Failed func(vip netip.Addr, err error)
	// Clock paces the rounds of a burst (nil: the real clock).
	Clock clock.WithTicker
}

// broadcast is the link-layer destination handed to WriteTo. Packet sockets of
// type raw take the destination from the frame itself; the address only has to
// be of the right type.
var broadcast net.Addr = &packet.Addr{HardwareAddr: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}

// Conn writes announcement frames for one interface on an injected
// net.PacketConn. It is safe for concurrent use.
type Conn struct {
	pc    net.PacketConn
	hw    net.HardwareAddr
	build Build
	hooks Hooks

	done chan struct{}
	wg   sync.WaitGroup

	mu     sync.Mutex
	closed bool
}

// NewConn returns a Conn that writes frames built for hw on pc. The Conn owns
// pc and closes it on Close.
func NewConn(pc net.PacketConn, hw net.HardwareAddr, build Build, hooks Hooks) (*Conn, error) {
	if len(hw) != 6 {
		return nil, fmt.Errorf("hardware address %q: %w", hw, ErrNotEthernet)
	}
	if hooks.Clock == nil {
		hooks.Clock = clock.RealClock{}
	}
	return &Conn{
		pc:    pc,
		hw:    append(net.HardwareAddr(nil), hw...),
		build: build,
		hooks: hooks,
		done:  make(chan struct{}),
	}, nil
}

// HardwareAddr returns the source hardware address of the frames.
func (c *Conn) HardwareAddr() net.HardwareAddr { return c.hw }

// Send writes one round of frames for vip.
func (c *Conn) Send(vip netip.Addr) error {
	frames, err := c.build(c.hw, vip)
	if err != nil {
		return err
	}
	for i, f := range frames {
		if _, err := c.pc.WriteTo(f, broadcast); err != nil {
			if i > 0 && c.hooks.Sent != nil {
				c.hooks.Sent(i)
			}
			if c.isClosed() {
				return fmt.Errorf("writing frame for %s: %w", vip, ErrClosed)
			}
			return fmt.Errorf("writing frame for %s: %w", vip, err)
		}
	}
	if c.hooks.Sent != nil {
		c.hooks.Sent(len(frames))
	}
	return nil
}

// Burst writes the first round for vip before it returns and schedules
// count-1 more rounds interval apart on a goroutine that stops early when ctx
// is done or the Conn is closed. Zero or negative values select DefaultCount
// and DefaultInterval.
func (c *Conn) Burst(ctx context.Context, vip netip.Addr, count int, interval time.Duration) error {
	if count <= 0 {
		count = DefaultCount
	}
	if interval <= 0 {
		interval = DefaultInterval
	}
	if err := c.Send(vip); err != nil {
		return err
	}
	if count == 1 || ctx.Err() != nil {
		return nil
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.wg.Add(1)
	c.mu.Unlock()
	go c.follow(ctx, vip, count-1, interval)
	return nil
}

// follow writes the remaining rounds of a burst.
func (c *Conn) follow(ctx context.Context, vip netip.Addr, rounds int, interval time.Duration) {
	defer c.wg.Done()
	t := c.hooks.Clock.NewTimer(interval)
	defer t.Stop()
	for i := 0; i < rounds; i++ {
		select {
		case <-ctx.Done():
			return
		case <-c.done:
			return
		case <-t.C():
		}
		if ctx.Err() != nil { // cancelled while the timer fired
			return
		}
		if err := c.Send(vip); err != nil {
			if c.hooks.Failed != nil && !errors.Is(err, ErrClosed) {
				c.hooks.Failed(vip, err)
			}
			return
		}
		t.Reset(interval)
	}
}

func (c *Conn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// Close stops pending bursts, waits for them and closes the PacketConn.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	close(c.done)
	c.wg.Wait()
	return c.pc.Close()
}
