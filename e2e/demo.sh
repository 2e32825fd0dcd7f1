#!/usr/bin/env bash
# vip demo: brings up the namespace lab (real etcd + kube-apiserver, vip-ccm,
# vip-agent on three node namespaces, a client), creates a backend and a
# LoadBalancer Service, shows its EXTERNAL-IP, reaches it from the client,
# shows which node announces it, cuts that node off the network and shows
# the traffic continuing from the new owner with the measured outage, then
# removes everything. Run as root: `make demo` (or bash e2e/demo.sh).
#
# Needs: Linux with network namespaces, iproute2, Go; curl and kubectl are
# used when present. Builds what is missing (bin/etcd and bin/kube-apiserver
# take a few minutes the first time). Only 10.X.0.0/16 and fd00:X::/64
# addresses inside namespaces it creates are used; nothing gets a default
# route.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=${VIP_BIN_DIR:-$ROOT/bin}
WORK=""
STEP="starting"

fail() {
  echo "demo FAILED at step: $STEP: $*" >&2
  exit 1
}

cleanup() {
  local rc=$?
  # The demo program removes its lab itself; if it was killed, its
  # namespaces are removed here (only those of processes that are gone).
  if [ -n "$WORK" ] && [ -x "$WORK/vip-demo" ]; then
    "$WORK/vip-demo" -clean-stale || true
  fi
  if [ -n "$WORK" ]; then rm -rf "$WORK"; fi
  if [ "$rc" != 0 ]; then
    echo "demo: exit status $rc (step: $STEP)" >&2
  fi
}
trap cleanup EXIT

step() {
  STEP=$1
  echo "==> $1"
}

step "checking prerequisites"
[ "$(id -u)" = 0 ] || fail "must run as root (network namespaces)"
command -v ip >/dev/null || fail "iproute2 (the ip command) is missing; run: make deps"
if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then
  export PATH=/usr/local/go/bin:$PATH
fi
command -v go >/dev/null || fail "no Go toolchain on PATH"
ip netns list >/dev/null 2>&1 || fail "network namespaces are not usable here"

step "building etcd, kube-apiserver, vip-ccm and vip-agent (only what is missing or changed)"
if [ ! -x "$BIN/etcd" ] || [ ! -x "$BIN/kube-apiserver" ]; then
  [ "$BIN" = "$ROOT/bin" ] || fail "etcd or kube-apiserver missing in $BIN (VIP_BIN_DIR); unset it to build them into bin/"
  echo "    etcd/kube-apiserver missing in $BIN: building them (a few minutes the first time)"
  make --no-print-directory bin/etcd bin/kube-apiserver || fail "building the API server binaries"
fi
if [ "$BIN" = "$ROOT/bin" ]; then
  make --no-print-directory build >/dev/null || fail "building vip-ccm and vip-agent (make build)"
else
  go build -o "$BIN/vip-ccm" ./cmd/vip-ccm && go build -o "$BIN/vip-agent" ./cmd/vip-agent ||
    fail "building vip-ccm and vip-agent into $BIN"
fi
WORK=$(mktemp -d /tmp/vip-demo.XXXXXX)
go build -o "$WORK/vip-demo" ./e2e/cmd/demo || fail "building the demo program (e2e/cmd/demo)"

step "running the demo"
"$WORK/vip-demo" -bin-dir "$BIN" || fail "see the step reported above"
STEP="done"
