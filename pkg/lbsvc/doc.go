// Package lbsvc is the one contract vip-ccm and vip-agent share: which
// Services vip handles, the annotation keys it honours (UPnP and the
// no-endpoint opt-out included), how a Service asks for addresses (families
// and ports in package ipam's types), and the names, labels and annotations
// of the Leases the agent writes and vip-ccm reads. It knows nothing about
// networks or elections; pkg/ccm imports no agent package (boundary_test.go
// there checks it).
package lbsvc
