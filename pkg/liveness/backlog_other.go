//go:build !linux

package liveness

// backlog is only known on Linux.
func (m *Monitor) backlog() bool { return false }
