// Package controlplane holds the control-plane VIP: the address clients use
// to reach the Kubernetes API whichever control-plane node is up.
//
// One Lease (kube-vip's plndr-cp-lock in kube-system by default) elects the
// node that announces the address. Every agent talks to its node's OWN API
// server for this, never through the VIP it is electing, and only campaigns
// while that server answers /readyz; a holder whose server stops answering
// withdraws the address at once and releases the Lease, even though the
// agent itself is alive. The election is client-go's protocol (same Lease
// fields, compare-and-swap on resourceVersion) with sub-second timings: the
// holder renews every RetryPeriod, followers watch the Lease and judge it
// expired LeaseDuration after they last saw it change, on their own clock,
// and a holder that could not renew for RenewDeadline (< LeaseDuration)
// withdraws before any follower may take over.
//
// The address may be a DNS name, resolved at start and re-resolved
// periodically; the VIP follows the record. In BGP mode without election
// every node whose API server is ready announces (ECMP).
//
// The package knows nothing about Services, ARP or BGP: it decides when
// this node holds the address and calls an announce.Announcer.
package controlplane
