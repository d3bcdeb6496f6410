#!/usr/bin/env bash
# Build (or reuse) idmsync-health: Argo CD's Lua health runtime + kstatus, see main.go.
# Cached by content: ${IDMSYNC_CACHE:-~/.cache/idmsync}/bin/idmsync-health-<hash>/idmsync-health,
# the hash covering go.mod, go.sum, the Go sources and the Go version. Prints the binary's path.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export PATH="${GO_BIN_DIR:-/usr/local/go/bin}:$PATH"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-trimpath
key=$( (cd "$here" && cat go.mod go.sum ./*.go && go version) | sha256sum | cut -c1-16)
dir="${IDMSYNC_CACHE:-$HOME/.cache/idmsync}/bin/idmsync-health-$key"
if [[ ! -x "$dir/idmsync-health" ]]; then
  mkdir -p "$dir"
  started=$(date +%s)
  (cd "$here" && go build -ldflags "-s -w" -o "$dir/.idmsync-health.tmp" .) >&2
  mv "$dir/.idmsync-health.tmp" "$dir/idmsync-health"
  echo "idmsync-health built in $(( $(date +%s) - started ))s: $dir/idmsync-health" >&2
fi
echo "$dir/idmsync-health"
