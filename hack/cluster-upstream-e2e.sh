#!/usr/bin/env bash
# Runs upstream Kubernetes' own LoadBalancer e2e tests ([Feature:LoadBalancer]:
# `[sig-network] LoadBalancers`, the selection cloud-provider-kind runs against
# its provider) against the real-cluster lab (make cluster), with vip as the
# load balancer. The test binary runs in the lab's external client namespace
# (vcl-ext, 10.99.0.100: outside the nodes' /16, which upstream's ETP Local
# test takes for masqueraded sources), so it
# reaches the Services' addresses the way a client beside the nodes does.
#   hack/cluster-upstream-e2e.sh BIN_DIR CLUSTER_DIR REPORT_DIR [extra ginkgo flags]
set -euo pipefail
bin=$(realpath "$1"); cluster=$(realpath "$2"); report=$3; shift 3
[ -f "$cluster/state.json" ] || { echo "no cluster in $cluster: run make cluster first" >&2; exit 1; }
mkdir -p "$report"; report=$(realpath "$report")
focus=${FOCUS:-'\[Feature:LoadBalancer\]'}
cd "$report"
set -x
nsenter --net=/run/netns/vcl-ext -- "$bin/e2e-network.test" \
  --kubeconfig="$cluster/kubeconfig.lab" --kubectl-path="$bin/kubectl" \
  --provider=skeleton --report-dir="$report" \
  --ginkgo.focus="$focus" --ginkgo.timeout="${TIMEOUT:-60m}" --ginkgo.v \
  --ginkgo.junit-report=junit.xml "$@" 2>&1 | tee "$report/e2e.log"
