// Package memberlistcmp measures github.com/hashicorp/memberlist (SWIM
// gossip, as MetalLB uses it) side by side with pkg/liveness (authenticated
// heartbeats to ring neighbours), in one process on 127.0.0.1: CPU and
// traffic per member at rest, time until every member marks an abruptly
// stopped member dead, and members marked dead that were not stopped.
//
// It holds only tests, so the production binaries never link memberlist.
// The measurement is opt-in (it takes minutes):
//
//	VIP_BENCH_MEMBERLIST=1 go test -count=1 -v -run TestMemberlistSideBySide ./pkg/liveness/memberlistcmp/
//
// or `make bench-memberlist`. The figures and settings are in
// docs/benchmarks.md, the conclusion in docs/liveness.md.
package memberlistcmp
