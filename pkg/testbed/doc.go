// Package testbed starts a real etcd and kube-apiserver for tests, benchmarks
// and demos.
//
// The two server binaries are built from pinned build modules by the
// Makefile (`make bin/kube-apiserver bin/etcd`) into <repo>/bin, or are taken
// from $VIP_BIN_DIR. There is no controller-manager, scheduler or kubelet:
// tests create Nodes, EndpointSlices and ServiceAccounts themselves where they
// need them (ServiceAccountToken creates its ServiceAccount).
//
// A test calls Start, which skips the test when the binaries are missing,
// unless the environment variable VIP_REQUIRE_APISERVER=1 is set (the
// Makefile's test target sets it), in which case the test fails instead:
//
//	env := testbed.Start(t)
//	cs := env.AdminClient()
//	_ = env.ApplyFile(ctx, "../../deploy/rbac.yaml")
//	tok, _ := env.ServiceAccountToken(ctx, "kube-system", "vip-agent")
//	_ = env.Kubeconfig(filepath.Join(t.TempDir(), "kubeconfig"), tok)
//
// Non-test code (e2e harness, benchmarks, the demo) calls StartProcess and
// Env.Stop.
//
// The API server runs with --authorization-mode Node,RBAC, an admin bearer
// token (group system:masters) from a token file, a service-account signing
// key pair generated in Go, dual-stack service ranges (10.96.0.0/12 and
// fd00:10:96::/112 by default), and a serving certificate signed by a CA the
// Env generates, so clients verify TLS. The ServiceAccount admission plugin is
// disabled by default, so Pods can be created in namespaces that have no
// "default" ServiceAccount (no controller-manager creates them).
//
// With WithNetns both processes run through `ip netns exec NAME` and bind
// the WithAddress address inside that namespace; the Env's own clients
// (AdminConfig, AdminClient, readiness checks) open their sockets inside the
// namespace, so they work even when the namespace is not routed from the
// test's own namespace. Programs under test reach the server at Env.Server().
package testbed
