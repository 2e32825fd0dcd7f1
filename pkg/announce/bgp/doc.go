// Package bgp advertises virtual IPs as host routes (/32 and /128) to BGP
// peers from an embedded GoBGP v3 speaker, and binds each address to a
// local interface (lo by default) through package addr so the node accepts
// the traffic. Speaker implements announce.Announcer.
//
// GoBGP stays behind the small router interface: the speaker never listens
// unless asked, rejects every route its peers send, keeps one path per
// address by UUID with its owners counted, and on Close withdraws every path,
// stops the sessions with a NOTIFICATION (so peers drop the routes at once),
// and removes the addresses it bound.
//
// It must not know why an address is announced (Services, endpoints): owners
// are opaque strings, and it knows nothing about Kubernetes.
package bgp
