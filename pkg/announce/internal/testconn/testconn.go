package testconn

import (
	"errors"
	"net"
	"slices"
	"sync"
	"time"
)

// Frame is one recorded write.
type Frame struct {
	// Data is a copy of the bytes written.
	Data []byte
	// Addr is the destination passed to WriteTo.
	Addr net.Addr
	// At is when the write happened.
	At time.Time
}

// Conn records writes. The zero value is not usable; call New.
type Conn struct {
	mu     sync.Mutex
	frames []Frame
	err    error
	closed bool
	notify chan struct{}
}

// New returns an empty Conn.
func New() *Conn { return &Conn{notify: make(chan struct{}, 1)} }

var _ net.PacketConn = (*Conn)(nil)

// WriteTo records b, or returns the error set by FailWith.
func (c *Conn) WriteTo(b []byte, addr net.Addr) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	if c.err != nil {
		return 0, c.err
	}
	c.frames = append(c.frames, Frame{Data: slices.Clone(b), Addr: addr, At: time.Now()})
	select {
	case c.notify <- struct{}{}:
	default:
	}
	return len(b), nil
}

// ReadFrom is not supported.
func (c *Conn) ReadFrom([]byte) (int, net.Addr, error) {
	return 0, nil, errors.New("testconn: read not supported")
}

// Close marks the Conn closed; later writes fail with net.ErrClosed.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	return nil
}

// Closed reports whether Close was called.
func (c *Conn) Closed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// LocalAddr returns nil.
func (c *Conn) LocalAddr() net.Addr { return nil }

// SetDeadline does nothing.
func (c *Conn) SetDeadline(time.Time) error { return nil }

// SetReadDeadline does nothing.
func (c *Conn) SetReadDeadline(time.Time) error { return nil }

// SetWriteDeadline does nothing.
func (c *Conn) SetWriteDeadline(time.Time) error { return nil }

// FailWith makes later writes return err (nil restores success).
func (c *Conn) FailWith(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.err = err
}

// Frames returns a copy of the recorded writes.
func (c *Conn) Frames() []Frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.frames)
}

// WaitFrames waits until at least n frames were written or timeout passes,
// and returns what was recorded.
func (c *Conn) WaitFrames(n int, timeout time.Duration) []Frame {
	deadline := time.Now().Add(timeout)
	for {
		f := c.Frames()
		left := time.Until(deadline)
		if len(f) >= n || left <= 0 {
			return f
		}
		select {
		case <-c.notify:
		case <-time.After(left):
		}
	}
}
