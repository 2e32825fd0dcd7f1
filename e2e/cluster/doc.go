// Package cluster runs a real Kubernetes cluster on one Linux machine, as
// root, for vip's real-cluster lab (`make cluster`, `make cluster-test`).
//
// Every node is a network namespace on a lab bridge with its own containerd
// (Debian's containerd and runc, own root, state, socket and runc root,
// cgroupfs), its own kubelet (--cloud-provider=external, a cgroup root per
// node) and kube-proxy; pods get addresses from the Debian CNI plugins
// (bridge + host-local, static routes between the nodes' pod ranges). The
// control plane (etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler) runs as processes in a namespace of its own, a client
// namespace sits on the same bridge. Processes are entered with
// `nsenter --net` (not `ip netns exec`, whose private /sys hides the cgroup
// mounts kubelet and runc need).
//
// Images are built without Docker: static binaries packed into
// docker-archive tarballs (images.go) and imported into each node's
// containerd.
//
// Everything started is recorded in a state file (state.json in the
// cluster folder) with PIDs and process start times, so that Down can tear
// a cluster down from another process (`make cluster-down`) and kills
// nothing it did not start.
package cluster
