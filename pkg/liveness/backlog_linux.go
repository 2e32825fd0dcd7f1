package liveness

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// backlog reports whether datagrams wait unread in the socket: the receive
// goroutine has fallen behind (starved), so silence is not evidence yet.
// Sockets that are not file descriptors (test fakes) have none.
func (m *Monitor) backlog() bool {
	sc, ok := m.o.Conn.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	n := 0
	if err := rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); err != nil {
		return false
	}
	return n > 0
}
