// Package testconn provides an in-memory net.PacketConn that records what is
// written to it, for tests of the frame senders.
//
// It must not know what the frames contain; it knows nothing about Kubernetes.
package testconn
