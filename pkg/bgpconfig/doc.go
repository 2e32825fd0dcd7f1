// Package bgpconfig parses and checks the BGP settings of the node agent:
// the peer list in kube-vip's seed format (address:AS:password:multihop,
// IPv6 addresses in brackets), per-node settings from Node annotations, the
// password file mounted from a Secret, and communities.
//
// It is pure: it takes strings and maps and returns plain values. It must not
// know about Kubernetes objects, GoBGP or sockets.
package bgpconfig
