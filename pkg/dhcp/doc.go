// Package dhcp obtains and keeps DHCPv4 leases for virtual IPs. Each lease
// lives on its own macvlan (bridge mode) on the announcing interface, with a
// hardware address and client identifier derived from a stable key, so that
// whichever node asks for the key gets the same address from the server.
// It renews at T1, rebinds at T2, keeps the address while the lease is valid,
// releases it on request and removes the macvlans it created, also those a
// crashed predecessor left behind.
//
// It must not know why an address is wanted (Services, elections, the
// control plane) nor how it is announced; it knows nothing about Kubernetes.
package dhcp
