// Package agentconfig is vip-agent's one configuration: the flags, the
// kube-vip environment variables that alias them (and the kube-vip
// settings it refuses or accepts without effect, from pkg/compat), the
// defaults, the validation, and the choice of API credentials. vip-agent
// runs with it (internal/agentapp), and `vip-agent manifest`
// (pkg/manifest) checks every manifest it writes with it, so each rule
// lives here once; the rules the generator states in its own flag names
// (CheckVIPAddress, CheckDDNS, CheckLeaseTimings) are exported for it.
//
// It reads flags and environment values only: it starts nothing and, but
// for --bgpRouterInterface and --bgp-password-file, reads nothing from the
// host.
package agentconfig
