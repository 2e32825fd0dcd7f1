// Package ndp announces IPv6 addresses on a link with unsolicited neighbour
// advertisements (Override set, target link-layer address option) sent to the
// all-nodes group ff02::1. Plain Linux hosts only update a neighbour entry
// they already have from such an advertisement; routers (forwarding on, with
// accept_untracked_na) may create one.
//
// It must not know why an address is announced, who owns it or whether it is
// bound; it knows nothing about Kubernetes.
package ndp
