// Package agentconfig is vip-agent's one configuration: the flags, the
// kube-vip environment variables that alias them (and the kube-vip
// settings it refuses or accepts without effect, from pkg/compat), the
// defaults, the validation, and the choice of API credentials. vip-agent
// runs with it (internal/agentapp), and `vip-agent manifest`
// (pkg/manifest) checks every manifest it writes with it, so each rule
// lives here once. The control-plane VIP's own rules (its address, dynamic
// DNS, the Lease timing order) are pkg/controlplane's, shared by all three.
//
// It reads flags and environment values only: it starts nothing and, but
// for --bgpRouterInterface and --bgp-password-file, reads nothing from the
// host.
package agentconfig
