// Package lbsvc holds the rules both vip programs share about Services: which
// Services vip handles, the annotation keys it honours, how a Service asks for
// addresses and what its Lease is called. It knows nothing about networks,
// pools or elections.
package lbsvc
