// Package announce makes this node answer for virtual IPs on the local link:
// Layer2 binds an address to an interface (package addr) and announces it
// with gratuitous ARP (package arp) or unsolicited neighbour advertisements
// (package ndp). Announcer is the small interface the node agent consumes;
// package fake records calls for the agent's tests.
//
// It must not know why an address is announced (Services, leases, elections):
// owners are opaque strings, and it knows nothing about Kubernetes.
package announce
