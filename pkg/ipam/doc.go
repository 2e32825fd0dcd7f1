// Package ipam turns the pools ConfigMap data (a plain map[string]string) into
// address pools and picks LoadBalancer addresses from them; it must not know
// anything about Kubernetes: no API types, no clients, no Services, only
// strings, ports and net/netip values handed in by its caller.
package ipam
