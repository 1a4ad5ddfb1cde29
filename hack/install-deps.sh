#!/usr/bin/env bash
# Installs the system packages Plait's development and tests need, only where missing:
# PostgreSQL's server binaries, openssl, and Prometheus (prometheus and promtool: a test
# has a real Prometheus scrape Plait's /metrics). Go (1.26, for the Kubernetes build) and
# Python 3.11 come with the machine; this script says so clearly when they don't. The real
# node's containerd, runc, CNI plugins, busybox and nftables are unpacked into the cache, not
# installed (hack/node-packages.sh).
set -euo pipefail

have_pg() {
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1
}

packages=()
have_pg || packages+=(postgresql)
command -v openssl >/dev/null 2>&1 || packages+=(openssl)
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || packages+=(prometheus)
# The dashboard's browser tests drive Debian's Chromium through Playwright (no browser download).
[ -x /usr/bin/chromium ] || packages+=(chromium)

if [ ${#packages[@]} -gt 0 ]; then
  echo "==> installing Debian packages: ${packages[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
  # Debian starts a cluster on install; Plait runs its own private servers instead.
  if command -v pg_lsclusters >/dev/null 2>&1; then
    $sudo pg_ctlcluster --force "$(pg_lsclusters -h | awk 'NR==1{print $1}')" main stop 2>/dev/null || true
  fi
  # Likewise Prometheus: tests start their own, on free ports (where systemd started one).
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $sudo systemctl disable --now prometheus prometheus-node-exporter >/dev/null 2>&1 || true
  fi
fi

command -v go >/dev/null 2>&1 || {
  echo "Go 1.26 is required to build the local Kubernetes binaries; install it, or set" >&2
  echo "PLAIT_K8S_BIN_DIR to a folder of prebuilt ones (see docs/development.md)." >&2
  exit 1
}
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
  # PostgreSQL refuses to run as root; the test servers run as this system user.
  useradd --system --no-create-home --shell /usr/sbin/nologin postgres
fi

# The local cluster's real node; without it the realnode tests are skipped, with the reason.
"$(dirname "$0")/node-packages.sh" >/dev/null ||
  echo "the real node's packages are unavailable: tests marked realnode will be skipped" >&2
