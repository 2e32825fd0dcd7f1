// Package bgpnode is the node side of vip-agent's BGP mode: it follows this
// Node's BGP annotations (kube-vip's per-node settings under a prefix) and
// labels (for peer node selectors), lays them over the configuration the
// flags give, keeps the last good configuration when a change is bad, and
// reports on the Node with deduplicated Events. It also holds the BGP
// Event reasons and the Events every BGP agent records on its Node.
//
// It reads the Node from the API server and never talks BGP: the speaker
// (pkg/announce/bgp) is handed each new configuration.
package bgpnode
