#!/usr/bin/env bash
# Unpacks Debian's containerd, runc, CNI plugins, busybox-static and nftables (the `nft`
# that kube-proxy drives, with its libraries) into a cache folder for the local cluster's
# real node, and prints that folder. Nothing is installed: the
# packages are fetched with `apt-get download` and extracted with `dpkg -x`, so no system
# containerd service starts, /etc is untouched, and `make clean-cache` removes them all.
# A second run finds the folder and returns at once.
#
#   hack/node-packages.sh             fetch what is missing, print the folder
#   PLAIT_CACHE_DIR=/x hack/...       use another cache root (default ~/.cache/plait)
set -euo pipefail

PACKAGES=(containerd runc containernetworking-plugins busybox-static
          nftables libnftables1 libnftnl11 libmnl0 libjansson4 libxtables12 libedit2 libgmp10
          libbsd0 libmd0)
CACHE_ROOT=${PLAIT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/plait}
codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-unknown}")
# The folder is named after the package list too, so adding a package fetches a new set.
list_key=$(printf '%s\n' "${PACKAGES[@]}" | sha256sum | cut -c1-8)
NODE_DIR="$CACHE_ROOT/node/debian-$codename-$list_key"

log() { printf '[node-packages %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

if [ -f "$NODE_DIR/versions.txt" ]; then
  echo "$NODE_DIR"
  exit 0
fi
command -v apt-get >/dev/null && command -v dpkg >/dev/null || {
  log "apt-get and dpkg are needed to fetch ${PACKAGES[*]} (the real node runs on Debian)"
  exit 1
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log "downloading ${PACKAGES[*]}"
if ! (cd "$work" && apt-get download -qq "${PACKAGES[@]}" >/dev/null 2>&1); then
  # The package lists may be missing or stale (a fresh container); refresh and retry.
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  (cd "$work" && apt-get download -qq "${PACKAGES[@]}" >/dev/null)
fi
mkdir -p "$work/root"
for deb in "$work"/*.deb; do
  dpkg -x "$deb" "$work/root"
  dpkg-deb -W --showformat='${Package} ${Version}\n' "$deb" >> "$work/versions.txt"
done
for f in usr/bin/containerd usr/bin/containerd-shim-runc-v2 usr/bin/ctr usr/sbin/runc \
         usr/lib/cni/bridge usr/lib/cni/host-local usr/lib/cni/loopback bin/busybox \
         usr/sbin/nft; do
  [ -x "$work/root/$f" ] || { log "expected $f in the unpacked packages, but it is missing"; exit 1; }
done
rm -rf "$NODE_DIR"
mkdir -p "$(dirname "$NODE_DIR")"
mkdir -p "$NODE_DIR"
mv "$work/root" "$NODE_DIR/root"
sort "$work/versions.txt" > "$NODE_DIR/versions.txt"
log "unpacked into $NODE_DIR: $(paste -sd, "$NODE_DIR/versions.txt")"
echo "$NODE_DIR"
