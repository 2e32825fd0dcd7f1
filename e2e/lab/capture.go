package lab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Announcement is one gratuitous ARP or unsolicited neighbour
// advertisement seen on the client's link.
type Announcement struct {
	At   time.Time // kernel receive timestamp
	Addr netip.Addr
	MAC  string // sender hardware address
}

// Capture records the announcements the client's eth0 receives, with
// kernel timestamps (an AF_PACKET socket opened in the client namespace).
type Capture struct {
	fd   int
	done chan struct{}
	wg   sync.WaitGroup

	mu   sync.Mutex
	seen map[netip.Addr][]Announcement
	err  error
}

// Capture starts recording announcements on the client's link.
func (l *Lab) Capture() (*Capture, error) {
	c := &Capture{fd: -1, done: make(chan struct{}), seen: map[netip.Addr][]Announcement{}}
	err := InNetns(l.Client, func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		proto := htons(unix.ETH_P_ALL)
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(proto))
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		c.fd = fd
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
			return fmt.Errorf("bind packet socket: %w", err)
		}
		return nil
	})
	if err == nil {
		err = errors.Join(
			unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1),
			unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20),
			unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 200000}),
		)
	}
	if err != nil {
		if c.fd >= 0 {
			_ = unix.Close(c.fd)
		}
		return nil, err
	}
	c.wg.Add(1)
	go c.loop()
	return c, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (c *Capture) loop() {
	defer c.wg.Done()
	buf := make([]byte, 2048)
	oob := make([]byte, 256)
	for {
		select {
		case <-c.done:
			return
		default:
		}
		n, oobn, _, _, err := unix.Recvmsg(c.fd, buf, oob, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			c.mu.Lock()
			c.err = err
			c.mu.Unlock()
			return
		}
		at := time.Now()
		if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, m := range msgs {
				if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SO_TIMESTAMPNS && len(m.Data) >= int(unsafe.Sizeof(unix.Timespec{})) {
					ts := (*unix.Timespec)(unsafe.Pointer(&m.Data[0]))
					at = time.Unix(ts.Unix())
				}
			}
		}
		if a, ok := parseAnnouncement(buf[:n]); ok {
			a.At = at
			c.mu.Lock()
			c.seen[a.Addr] = append(c.seen[a.Addr], a)
			c.mu.Unlock()
		}
	}
}

// parseAnnouncement recognises a gratuitous ARP (sender IP = target IP) or
// an unsolicited neighbour advertisement in an Ethernet frame.
func parseAnnouncement(f []byte) (Announcement, bool) {
	if len(f) < 14 {
		return Announcement{}, false
	}
	mac := net.HardwareAddr(f[6:12]).String()
	switch binary.BigEndian.Uint16(f[12:14]) {
	case unix.ETH_P_ARP:
		p := f[14:]
		if len(p) < 28 || p[4] != 6 || p[5] != 4 {
			return Announcement{}, false
		}
		spa, tpa := netip.AddrFrom4([4]byte(p[14:18])), netip.AddrFrom4([4]byte(p[24:28]))
		if spa != tpa {
			return Announcement{}, false
		}
		return Announcement{Addr: spa, MAC: mac}, true
	case unix.ETH_P_IPV6:
		p := f[14:]
		// IPv6 header (40 bytes), next header ICMPv6, type 136, not solicited.
		if len(p) < 40+24 || p[6] != 58 || p[40] != 136 || p[44]&0x40 != 0 {
			return Announcement{}, false
		}
		return Announcement{Addr: netip.AddrFrom16([16]byte(p[48:64])), MAC: mac}, true
	}
	return Announcement{}, false
}

// First returns the first announcement of addr at or after t.
func (c *Capture) First(addr netip.Addr, t time.Time) (Announcement, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range c.seen[addr] {
		if !a.At.Before(t) {
			return a, true
		}
	}
	return Announcement{}, false
}

// All returns every announcement of addr.
func (c *Capture) All(addr netip.Addr) []Announcement {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Announcement(nil), c.seen[addr]...)
}

// Err is the error that stopped the capture, if any.
func (c *Capture) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close stops the capture.
func (c *Capture) Close() error {
	close(c.done)
	c.wg.Wait()
	return unix.Close(c.fd)
}
