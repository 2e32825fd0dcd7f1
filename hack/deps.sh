#!/usr/bin/env bash
# Install the Debian packages the tests and the lab need (see LAB.md section 1),
# plus the build basics a fresh Debian 12 machine lacks. Idempotent: runs
# apt-get only for packages that are missing. Needs root.
set -euo pipefail

pkgs=(
  # build and CI basics
  make git gcc libc6-dev ca-certificates curl iproute2 openssl
  # lab peers and observers (LAB.md section 1)
  iputils-ping iputils-arping tcpdump ndisc6 ethtool nftables
  bird2 frr gobgpd dnsmasq-base busybox isc-dhcp-client miniupnpc
  # the real-cluster lab (make cluster): container runtime, CNI plugins,
  # what kube-proxy and kubelet call
  containerd runc containernetworking-plugins iptables conntrack util-linux
  # tools copied into the stand-in of upstream's agnhost image (make cluster-upstream-e2e)
  netcat-openbsd
)

missing=()
for p in "${pkgs[@]}"; do
  if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all ${#pkgs[@]} packages present"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  # Without root the end-to-end tests and the demo are skipped or refused
  # anyway; the unit tests need none of these packages.
  echo "deps: missing ${missing[*]}; run as root to install them (needed by the lab, the demo and the e2e tests)" >&2
  exit 0
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
