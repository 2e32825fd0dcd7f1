// Package fake provides a recording announce.Announcer for unit tests of its
// consumers: it keeps owners per address in memory and touches no interface.
//
// It must not know anything about the consumer's domain (Services, leases);
// it knows nothing about Kubernetes.
package fake
