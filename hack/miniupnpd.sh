#!/usr/bin/env bash
# Build the miniupnpd used by the UPnP end-to-end test into $1 (default
# bin/miniupnpd), from Debian's own source package, once (idempotent).
#
# Why a rebuild: Debian's miniupnpd refuses every port mapping while its
# external address is private or reserved (10/8 included), and the tests may
# only use 10.x addresses. The rebuild narrows the 10.0.0.0/8 entry of that
# table to 10.0.0.0/9, so an "external" segment in 10.128.0.0/9 counts as
# public while the LAN (10.77.x) stays private. Nothing else changes.
#
# Steps (as root, Debian 12): add a deb-src entry whose URIs and Signed-By are
# copied from the deb entry already configured for the release (no host name
# is written here), install the build dependencies, `apt-get source
# --download-only miniupnpd`, apply Debian's patches, patch getifaddr.c,
# configure for IGDv2 + IPv6 + nftables and build. About 5 s plus apt.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-bin/miniupnpd}
if [ -x "$out" ]; then
  echo "miniupnpd: $out present"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "miniupnpd: $out missing; run as root to build it (apt-get source, build dependencies)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
if [ -z "$codename" ]; then
  echo "miniupnpd: no VERSION_CODENAME in /etc/os-release" >&2
  exit 1
fi

# has_src: is a deb-src entry for the release's main component configured?
has_src() {
  grep -rhsE '^[[:space:]]*deb-src[[:space:]].*[[:space:]]'"$codename"'[[:space:]].*main' /etc/apt/sources.list /etc/apt/sources.list.d/*.list && return 0
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v cn="$codename" '
      BEGIN { RS=""; FS="\n" }
      { t=0; s=0; c=0
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^Types:.*deb-src/) t=1
          if ($i ~ "^Suites:.*(^|[ \t])" cn "([ \t]|$)") s=1
          if ($i ~ /^Components:.*main/) c=1
        }
        if (t && s && c) found=1 }
      END { exit found ? 0 : 1 }' "$f" && return 0
  done
  return 1
}

# deb_entry prints "URIS<TAB>SIGNED_BY" of the deb entry serving the release's
# main component (deb822 .sources first, then one-line .list files).
deb_entry() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v cn="$codename" '
      BEGIN { RS=""; FS="\n" }
      { t=0; s=0; c=0; u=""; k=""
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^Types:/ && $i ~ /[ \t]deb([ \t]|$)/) t=1
          if ($i ~ "^Suites:.*[ \t]" cn "([ \t]|$)") s=1
          if ($i ~ /^Components:.*main/) c=1
          if ($i ~ /^URIs:/) { u=$i; sub(/^URIs:[ \t]*/, "", u) }
          if ($i ~ /^Signed-By:/) { k=$i; sub(/^Signed-By:[ \t]*/, "", k) }
        }
        if (t && s && c && u != "" && !done) { print u "\t" k; done=1 } }' "$f"
  done | head -n1 | grep . && return 0
  grep -rhsE '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
    awk -v cn="$codename" '{
      i = 2; k = ""
      if ($2 ~ /^\[/) { while ($i !~ /\]$/) { if ($i ~ /signed-by=/) { k=$i; sub(/.*signed-by=/, "", k) } i++ }
                        if ($i ~ /signed-by=/) { k=$i; sub(/.*signed-by=/, "", k); sub(/\]$/, "", k) } i++ }
      if ($(i+1) == cn) { print $i "\t" k; exit } }' | grep .
}

if ! has_src; then
  entry=$(deb_entry) || { echo "miniupnpd: no deb entry for $codename main to copy into a deb-src entry" >&2; exit 1; }
  uris=${entry%%$'\t'*}
  signed=${entry#*$'\t'}
  [ -n "$signed" ] || signed=/usr/share/keyrings/debian-archive-keyring.gpg
  # An explicit Signed-By is needed: without it apt reports "Conflicting
  # values set for option Signed-By" next to the deb entry.
  printf 'Types: deb-src\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: %s\n' \
    "$uris" "$codename" "$signed" > /etc/apt/sources.list.d/vip-deb-src.sources
  echo "miniupnpd: added /etc/apt/sources.list.d/vip-deb-src.sources"
  apt-get update -qq
elif ! apt-cache showsrc miniupnpd >/dev/null 2>&1; then
  apt-get update -qq
fi

need=()
for p in gcc make patch xz-utils libc6-dev pkg-config libnftnl-dev libmnl-dev dpkg-dev; do
  [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "miniupnpd: installing build dependencies ${need[*]}"
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

work=$(mktemp -d /tmp/vip-miniupnpd.XXXXXX)
trap 'rm -rf "$work"' EXIT
(
  cd "$work"
  apt-get source --download-only miniupnpd > apt-source.log 2>&1 || { cat apt-source.log >&2; exit 1; }
  orig=$(ls miniupnpd_*.orig.tar.* | head -n1)
  deb=$(ls miniupnpd_*.debian.tar.* | head -n1)
  tar xf "$orig"
  tar xf "$deb"
  src=$(find . -maxdepth 1 -type d -name 'miniupnpd-*' | head -n1)
  cd "$src"
  if [ -f ../debian/patches/series ]; then
    while read -r p; do
      case "$p" in ''|'#'*) continue ;; esac
      patch -s -p1 < "../debian/patches/$p"
    done < ../debian/patches/series
  fi
  sed -i 's|{ IP( 10,   0,   0, 0), MSK( 8) }|{ IP( 10,   0,   0, 0), MSK( 9) }|' getifaddr.c
  grep -q '{ IP( 10,   0,   0, 0), MSK( 9) }' getifaddr.c ||
    { echo "miniupnpd: getifaddr.c has no 10.0.0.0/8 entry to narrow (source changed?)" >&2; exit 1; }
  if ! { ./configure --igd2 --ipv6 --leasefile --firewall=nftables &&
         make -f Makefile.linux_nft miniupnpd; } > ../build.log 2>&1; then
    tail -n 40 ../build.log >&2
    exit 1
  fi
)
mkdir -p "$(dirname "$out")"
install -m 0755 "$(find "$work" -maxdepth 2 -type f -name miniupnpd -perm -u+x | head -n1)" "$out.tmp"
mv "$out.tmp" "$out"
echo "miniupnpd: built $out ($("$out" --version 2>&1 | head -n1 || true))"
