// Package upnp keeps port mappings on the network's Internet gateway (UPnP
// IGD v1 and v2: WANIPConnection:1/2 and WANPPPConnection:1, through
// github.com/huin/goupnp): one mapping per announced Service port, external
// port = internal port, internal client = the virtual IP. Mappings have a
// finite lease and are renewed before it ends, fall back to a permanent lease
// where the gateway only accepts those, and are removed when their owner drops
// them and all at once when the Mapper stops.
//
// Plan is the pure part (what to add, renew or delete, given what is wanted
// and what is held); Mapper runs it against a Gateway in one goroutine, with
// backoff on failure, and reports outcomes to a Reporter.
//
// It must not know what a Service is: owners are opaque keys, and it imports
// nothing from Kubernetes.
package upnp
