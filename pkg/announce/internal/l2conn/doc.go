// Package l2conn writes pre-built link-layer frames on an interface, once or as
// a timed burst, and keeps one packet connection per interface.
//
// It must not know what the frames mean (ARP, NDP) or who asked for them; the
// caller supplies a Build function. It knows nothing about Kubernetes.
package l2conn
