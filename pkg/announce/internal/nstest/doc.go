// Package nstest builds throw-away network namespaces for tests that need a
// real link: two namespaces joined by a veth pair, with 10.x and fd00::/8
// addresses that exist only inside them.
//
// It must not know what the tests check; it knows nothing about Kubernetes.
package nstest
