// Package arp announces IPv4 addresses on a link with gratuitous ARP: for each
// round it broadcasts an ARP request and an ARP reply whose sender and target
// protocol address are both the announced address.
//
// It must not know why an address is announced, who owns it or whether it is
// bound; it knows nothing about Kubernetes.
package arp
