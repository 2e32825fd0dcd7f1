// Package agentapp composes vip-agent from its parts, in one path for every
// mode: one Kubernetes client (plus one for this node's own API server when
// it holds the control-plane VIP), one metrics registry, one Event
// broadcaster that lives until Run returns (so the stop is recorded too),
// one announcer (layer 2 or BGP), the optional control-plane VIP, the
// optional Service controller, and one HTTP server with /metrics, /healthz,
// /readyz and, in ARP mode with Services, /vip/election.
//
// /readyz has one meaning in every mode: 200 once every part the agent runs
// is ready. The Service controller is ready once its informers have synced
// and, in ARP mode, while this node has not fenced itself (it cannot renew
// its heartbeat Lease); the control-plane VIP adds no condition of its own
// (it is ready as it runs, holding the VIP or not). An agent that runs only
// the control-plane VIP is therefore ready as soon as it serves.
//
// It holds no controller logic: the parts are pkg/agent, pkg/election,
// pkg/announce, pkg/controlplane, pkg/bgpnode, pkg/dhcp and pkg/upnp, and
// the agent's plug-ins pkg/agent/dhcpsource (ARP mode) and
// pkg/agent/upnpforward (enableUPNP), built here only when so configured;
// the configuration is pkg/agentconfig's.
package agentapp
