// Package announce makes this node answer for virtual IPs on the local link:
// Layer2 binds an address to an interface (package addr) and announces it
// with gratuitous ARP (package arp) or unsolicited neighbour advertisements
// (package ndp). Announcer is the small per-address interface a layer-2 or
// BGP announcer implements; Desired sits on top of it: the node agent
// declares, per owner, the whole set of addresses it wants announced and
// Desired converges the Announcer to it, so the agent keeps no record of
// what was announced. Package fake records calls for the agent's tests.
//
// It must not know why an address is announced (Services, leases, elections):
// owners are opaque strings, and it knows nothing about Kubernetes.
package announce
