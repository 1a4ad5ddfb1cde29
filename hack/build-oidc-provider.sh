#!/usr/bin/env bash
# Builds the OpenID Provider the tests sign in with (hack/oidc-provider: the example server
# of github.com/zitadel/oidc, from its published Go module) into a versioned cache outside
# the repository, and prints the binary's path. A second run finds it and returns at once.
#
#   hack/build-oidc-provider.sh            build if missing, print the binary
#   PLAIT_CACHE_DIR=/x hack/...            use another cache root (default ~/.cache/plait)
set -euo pipefail

OIDC_VERSION=${OIDC_VERSION:-v3.52.0}
CACHE_ROOT=${PLAIT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/plait}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SOURCE="$REPO_ROOT/hack/oidc-provider/main.go"
# The source's hash is part of the key: a changed main.go builds anew.
KEY="zitadel-oidc-$OIDC_VERSION-$(sha256sum "$SOURCE" | cut -c1-12)"
BIN="$CACHE_ROOT/oidc/$KEY/bin/oidc-provider"

if [ -x "$BIN" ]; then
  echo "$BIN"
  exit 0
fi
command -v go >/dev/null || { echo "Go is required to build the OpenID Provider of the tests" >&2; exit 1; }
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=mod"
WORK="$CACHE_ROOT/oidc/$KEY/src"
mkdir -p "$WORK" "$(dirname "$BIN")"
cp "$SOURCE" "$WORK/main.go"
cat > "$WORK/go.mod" <<MOD
module plait.dev/hack/oidcprovider

go 1.24

require github.com/zitadel/oidc/v3 $OIDC_VERSION
MOD
echo "building the OpenID Provider (github.com/zitadel/oidc/v3 $OIDC_VERSION) into $BIN" >&2
(cd "$WORK" && go mod tidy >&2 && go build -trimpath -o "$BIN.tmp" . && mv "$BIN.tmp" "$BIN")
echo "$BIN"
