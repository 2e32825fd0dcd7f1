// Package agent is vip-agent's Service loop, the core reconcile: informers
// feed one workqueue carrying Service keys and address keys. A Service
// reconcile notes its status addresses and enqueues them; an address
// reconcile takes every Service on the address (minus those without a ready
// endpoint), decides through the elector whether this node announces it
// (one owner per address in layer 2 mode; in BGP mode every node that is a
// candidate for all of them), probes a fresh address before its first
// announcement, and declares what this node announces for the address
// (announce.Desired converges the announcer to it). Time comes from
// Options.Clock, so the reconcile runs under a fake clock in the scenario
// table (sync_test.go). It reads Services and never writes them. It knows
// nothing about packets or BGP messages; those are the announcers' and the
// prober's business.
//
// It knows nothing about DHCP or UPnP either: those are plug-ins behind the
// interfaces of plugins.go, passed in Options by internal/agentapp when the
// configuration enables them. An AddressSource (pkg/agent/dhcpsource)
// claims the Services whose address it obtains; the core elects those per
// Service, on the Lease the source names, and announces what the source
// supplies once the Service's status shows it. A Forwarder
// (pkg/agent/upnpforward) is told which Services this node serves on which
// addresses, and when it stops.
package agent
