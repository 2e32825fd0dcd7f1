// Package addr binds virtual IP addresses to network interfaces with netlink
// (IPv4 as /32, IPv6 as /128 without duplicate address detection), counts the
// owners of each address, and remembers exactly which addresses it added, in
// memory and in a small state file, so that shutdown and a restart after a
// crash remove them and nothing else.
//
// It must not know who the owners are or how addresses are announced on the
// link; it knows nothing about Kubernetes.
package addr
