#!/usr/bin/env bash
# Builds what task artifacts need into a versioned cache outside the repository:
# plait-artifacts (hack/plait-artifacts: the static program a task's Pod runs to download
# and upload its artifacts) and versitygw (an S3-compatible server with a plain-folder
# backend, which the tests store artifacts in). A second run finds them and returns at once.
#
#   hack/build-artifacts.sh            build what is missing, print the bin folder
#   PLAIT_CACHE_DIR=/x hack/...        use another cache root (default ~/.cache/plait)
set -euo pipefail

VERSITYGW_VERSION=${VERSITYGW_VERSION:-v1.8.0}
CACHE_ROOT=${PLAIT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/plait}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC="$REPO_ROOT/hack/plait-artifacts"
# plait-artifacts is keyed by its source, so an edit rebuilds it.
SRC_KEY=$(cat "$SRC/go.mod" "$SRC/main.go" | sha256sum | cut -c1-12)
BIN_DIR="$CACHE_ROOT/artifacts/versitygw-${VERSITYGW_VERSION}-src-${SRC_KEY}/bin"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=mod"

log() { printf '[build-artifacts %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

if [ -x "$BIN_DIR/plait-artifacts" ] && [ -x "$BIN_DIR/versitygw" ]; then
  echo "$BIN_DIR"
  exit 0
fi
command -v go >/dev/null || { log "Go is required to build plait-artifacts and versitygw (see docs/development.md)"; exit 1; }
mkdir -p "$BIN_DIR"

if [ ! -x "$BIN_DIR/plait-artifacts" ]; then
  log "compiling plait-artifacts (hack/plait-artifacts)"
  (cd "$SRC" && go build -trimpath -ldflags "-s -w" -o "$BIN_DIR/plait-artifacts" .)
fi

if [ ! -x "$BIN_DIR/versitygw" ]; then
  # The same version under another source key is the same binary: reuse it.
  found=$(ls "$CACHE_ROOT"/artifacts/versitygw-"${VERSITYGW_VERSION}"-src-*/bin/versitygw 2>/dev/null | head -n1 || true)
  if [ -n "$found" ] && [ -x "$found" ]; then
    cp "$found" "$BIN_DIR/versitygw"
  else
    log "compiling versitygw $VERSITYGW_VERSION (about two minutes on 2 cores)"
    GOBIN="$BIN_DIR" go install -trimpath -ldflags "-s -w" \
      "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
  fi
fi

for b in plait-artifacts versitygw; do
  [ -x "$BIN_DIR/$b" ] || { log "expected $BIN_DIR/$b after the build, but it is missing"; exit 1; }
done
log "done"
echo "$BIN_DIR"
