#!/usr/bin/env bash
# Builds the local Kubernetes toolchain (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, kubelet, kube-proxy, kwok, helm) from their published Go modules, and the
# real node's pause program (hack/pause), into a versioned cache outside the repository.
# A second run finds the binaries and returns at once.
#
#   hack/build-k8s.sh            build what is missing, print the bin folder
#   PLAIT_CACHE_DIR=/x hack/...  use another cache root (default ~/.cache/plait)
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.36.3}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
HELM_VERSION=${HELM_VERSION:-v3.22.0}
CACHE_ROOT=${PLAIT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/plait}
# The suffix names the set of binaries. A binary added to WANT is built alone into an
# existing folder (only the missing ones are built), so the suffix need not change for it.
TOOLS_KEY="k8s-${K8S_VERSION}-kwok-${KWOK_VERSION}-helm-${HELM_VERSION}-node1"
BIN_DIR="$CACHE_ROOT/k8s/$TOOLS_KEY/bin"
KUBE=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
WANT=("${KUBE[@]}" kwok helm pause)
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=mod"

log() { printf '[build-k8s %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

missing=()
for b in "${WANT[@]}"; do [ -x "$BIN_DIR/$b" ] || missing+=("$b"); done
if [ ${#missing[@]} -eq 0 ]; then
  echo "$BIN_DIR"
  exit 0
fi

command -v go >/dev/null || { log "Go is required to build the Kubernetes binaries (see docs/development.md)"; exit 1; }
mkdir -p "$BIN_DIR"
# One build at a time: a second caller (another terminal, a parallel test run) waits for
# the first and then reuses its binaries instead of compiling the same tree beside it.
exec 9>"$BIN_DIR/../build.lock"
if ! flock -n 9; then
  log "another build of these binaries is running; waiting for it"
  flock 9
fi
missing=()
for b in "${WANT[@]}"; do [ -x "$BIN_DIR/$b" ] || missing+=("$b"); done
if [ ${#missing[@]} -eq 0 ]; then
  echo "$BIN_DIR"
  exit 0
fi
WORK="$CACHE_ROOT/k8s/$TOOLS_KEY/src"
mkdir -p "$WORK"
log "building: ${missing[*]} into $BIN_DIR"
log "a cold build compiles Kubernetes from source: expect 20-40 minutes on 2 cores; later runs reuse it"

need() { local b; for b in "$@"; do [[ " ${missing[*]} " == *" $b "* ]] && return 0; done; return 1; }

if need "${KUBE[@]}"; then
  # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with local
  # folders; a consuming module must replace each with its published v0.x tag.
  mod_json=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION")
  gomod=$(printf '%s' "$mod_json" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
  staging_version="v0.${K8S_VERSION#v1.}"
  etcd_version=$(sed -n 's#^\s*go.etcd.io/etcd/server/v3 \(v[^ ]*\).*#\1#p' "$gomod" | head -n1)
  mkdir -p "$WORK/kube"
  {
    echo "module plait.dev/hack/kube"
    echo
    sed -n 's/^go \(.*\)/go \1/p' "$gomod" | head -n1
    echo
    echo "require ("
    echo "  k8s.io/kubernetes $K8S_VERSION"
    echo "  go.etcd.io/etcd/server/v3 $etcd_version"
    echo ")"
    echo
    echo "replace ("
    grep -E '^\s*k8s.io/[a-z0-9-]+ v0\.0\.0$' "$gomod" | awk -v v="$staging_version" '{print "  " $1 " => " $1 " " v}'
    echo ")"
  } > "$WORK/kube/go.mod"
  cat > "$WORK/kube/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)
GO
  log "resolving modules for k8s.io/kubernetes $K8S_VERSION (staging $staging_version, etcd $etcd_version)"
  (cd "$WORK/kube" && go mod tidy -e >/dev/null 2>&1 || true; go mod download)
  major=${K8S_VERSION#v}; major=${major%%.*}
  minor=${K8S_VERSION#v*.}; minor=${minor%%.*}
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION \
-X k8s.io/component-base/version.gitMajor=$major -X k8s.io/component-base/version.gitMinor=$minor \
-X k8s.io/component-base/version.gitTreeState=clean \
-X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION \
-X k8s.io/client-go/pkg/version.gitMajor=$major -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  # Only the missing ones: a binary in use by a running cluster is never rewritten.
  packages=()
  names=()
  for b in "${KUBE[@]}"; do
    if need "$b"; then
      names+=("$b")
      if [ "$b" = etcd ]; then packages+=(go.etcd.io/etcd/server/v3); else packages+=("k8s.io/kubernetes/cmd/$b"); fi
    fi
  done
  log "compiling ${names[*]} (the long step on a cold cache)"
  # `go build -v` names each package as it compiles; count them for a progress line
  # every 250 packages (about 3,000 in all on a cold cache) instead of ten silent minutes.
  (cd "$WORK/kube" && go build -v -trimpath -ldflags "$ldflags" -o "$BIN_DIR/" "${packages[@]}" 2>&1) | {
    n=0
    while IFS= read -r line; do
      case "$line" in
        *" "*|*:*) printf '%s\n' "$line" >&2 ;;  # errors and warnings pass through
        *) n=$((n + 1)); if [ $((n % 250)) -eq 0 ]; then log "compiled $n packages"; fi ;;
      esac
    done
  }
  # `go build` names the etcd binary after its package path's last element.
  [ -x "$BIN_DIR/v3" ] && mv "$BIN_DIR/v3" "$BIN_DIR/etcd"
  [ -x "$BIN_DIR/server" ] && mv "$BIN_DIR/server" "$BIN_DIR/etcd"
fi

if need kwok; then
  log "compiling kwok $KWOK_VERSION"
  GOBIN="$BIN_DIR" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  mod_dir=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')
  mkdir -p "$BIN_DIR/../kwok-stages"
  cp -r "$mod_dir/kustomize/stage/." "$BIN_DIR/../kwok-stages/"
  chmod -R u+w "$BIN_DIR/../kwok-stages"
fi

if need helm; then
  log "compiling helm $HELM_VERSION"
  GOBIN="$BIN_DIR" go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi

if need pause; then
  log "compiling pause (hack/pause)"
  (cd "$REPO_ROOT/hack/pause" && go build -trimpath -ldflags "-s -w" -o "$BIN_DIR/pause" .)
fi

for b in "${WANT[@]}"; do
  [ -x "$BIN_DIR/$b" ] || { log "expected $BIN_DIR/$b after the build, but it is missing"; exit 1; }
done
log "done"
echo "$BIN_DIR"
