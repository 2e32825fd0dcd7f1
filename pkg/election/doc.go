// Package election decides which node announces each layer 2 address.
//
// Liveness is per node, ownership is per address. Every agent renews one
// heartbeat Lease (vip-node-<node>) each HeartbeatPeriod, saying whether it
// is ready (vip.io/ready: only ready nodes are candidates); an address's
// Lease (vip-addr-<addr>, holderIdentity = node; per Service only for DHCP
// Services, vip-dhcp-<ns>-<svc>) is written only when its ownership changes
// and is valid while its holder's heartbeat is fresh. Every Lease lives in
// the agent's namespace; nothing is read elsewhere.
// Freshness is judged on the observer's own clock (time since it last saw
// the heartbeat change, with a live watch), never by comparing timestamps
// written by others. The preferred owner among alive candidates is chosen
// by rendezvous hashing, and every acquisition is a create or an update
// preconditioned on the resourceVersion seen, so two nodes never both win.
// Because validity follows the heartbeat, a Service Lease's renewTime +
// leaseDurationSeconds is normally in the past: kubectl readers should look
// at holderIdentity, acquireTime and the vip.io/reason annotation.
//
// API cost: each node writes 1/HeartbeatPeriod Lease updates per second
// (5/s with the 200ms default), whatever the number of Services; a Service
// Lease is written only on acquire, takeover, hand-off, release and delete.
// Every heartbeat update reaches every agent's watch, so N nodes cost the
// API server N/period writes/s and N²/period watch events/s: large clusters
// trade failover speed for load with a longer period (for example 1s
// period, 4s timeout; a dead node is then replaced in about 4s).
//
// The agent, per address and level-triggered: call Ensure; when the Result
// says Release, withdraw the addresses first and then call Release; announce
// only when ShouldAnnounce. On OnNodeChange(this node, false) withdraw
// everything at once (the node fenced itself or is leaving). On shutdown:
// withdraw the addresses of HeldLeases, then call Shutdown.
//
// The package knows nothing about networks, addresses, ARP or BGP: it only
// says whether this node should announce a Service, and the caller does it.
package election
