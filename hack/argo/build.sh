#!/usr/bin/env bash
# Builds Argo Workflows' workflow-controller from its published Go module (the version that
# hack/argo/go.mod requires) into a versioned cache outside the repository, for the
# side-by-side benchmark (bench/argo.py). It is never shipped. A second run finds the binary
# and returns at once.
#
#   hack/argo/build.sh                  build it if missing, print its path
#   hack/argo/build.sh --update v3.x.y  regenerate go.mod and go.sum for another version
#   PLAIT_CACHE_DIR=/x hack/argo/...    use another cache root (default ~/.cache/plait)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MODULE=github.com/argoproj/argo-workflows/v3
CACHE_ROOT=${PLAIT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/plait}

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=mod"

log() { printf '[build-argo %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

command -v go >/dev/null || { log "Go is required to build Argo's workflow-controller (see docs/development.md)"; exit 1; }

if [ "${1:-}" = --update ]; then
  version=${2:?usage: hack/argo/build.sh --update VERSION}
  # Argo's own replace directives do not apply to a module that requires it, so they are
  # copied from its go.mod; everything else is resolved by `go get` and `go mod tidy`.
  gomod=$(go mod download -json "$MODULE@$version" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
  go_line=$(sed -n 's/^go \(.*\)/go \1/p' "$gomod" | head -n1)
  printf 'module plait.dev/hack/argo\n\n%s\n' "$go_line" > "$HERE/go.mod"
  rm -f "$HERE/go.sum"
  replaces=$(go mod edit -json "$gomod" | python3 -c '
import json, sys
for r in json.load(sys.stdin).get("Replace") or []:
    old, new = r["Old"], r["New"]
    left = old["Path"] + ("@" + old["Version"] if old.get("Version") else "")
    right = new["Path"] + ("@" + new["Version"] if new.get("Version") else "")
    print(left + "=" + right)
')
  for r in $replaces; do (cd "$HERE" && go mod edit -replace "$r"); done
  (cd "$HERE" && go get -tool "$MODULE/cmd/workflow-controller@$version" && go mod tidy)
  log "hack/argo/go.mod now requires $MODULE $version"
  exit 0
fi

version=$(cd "$HERE" && go mod edit -json | python3 -c '
import json, sys
print(next(r["Version"] for r in json.load(sys.stdin)["Require"] if r["Path"] == sys.argv[1]))
' "$MODULE")
BIN_DIR="$CACHE_ROOT/argo/$version"
BIN="$BIN_DIR/workflow-controller"
if [ -x "$BIN" ]; then
  echo "$BIN"
  exit 0
fi
mkdir -p "$BIN_DIR"
exec 9>"$BIN_DIR/build.lock"
if ! flock -n 9; then
  log "another build of the workflow-controller is running; waiting for it"
  flock 9
fi
if [ -x "$BIN" ]; then
  echo "$BIN"
  exit 0
fi
log "compiling Argo's workflow-controller $version (a cold build takes 15-30 minutes on 2 cores)"
# The ldflags Argo's own Makefile sets, so `--version` and the controller's logs name it.
ldflags="-s -w -X $MODULE.version=$version -X $MODULE.gitTag=$version -X $MODULE.gitTreeState=clean"
(cd "$HERE" && go build -trimpath -ldflags "$ldflags" -o "$BIN.tmp" "$MODULE/cmd/workflow-controller")
mv "$BIN.tmp" "$BIN"
log "done"
echo "$BIN"
