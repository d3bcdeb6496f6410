#!/usr/bin/env bash
# Build (or reuse) the real peers the tests run against: kube-apiserver, etcd, helm.
# Binaries land outside the repo, keyed by version, and are built only when missing:
#   ${IDMSYNC_CACHE:-$HOME/.cache/idmsync}/bin/kube-<v>/kube-apiserver
#   ${IDMSYNC_CACHE:-$HOME/.cache/idmsync}/bin/etcd-<v>/etcd
#   ${IDMSYNC_CACHE:-$HOME/.cache/idmsync}/bin/helm-<v>/helm
# Each build's wall time and peak RSS (GNU time -v) is kept next to the binary in build-time.txt.
# Usage: tools/build.sh [kube-apiserver|etcd|helm ...]   (default: all three)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

export PATH="${GO_BIN_DIR:-/usr/local/go/bin}:$PATH"
export GOTOOLCHAIN=local GOFLAGS=-trimpath CGO_ENABLED=0
# Two packages at a time keeps a cold kube-apiserver build at a few GB on a small machine.
jobs="${IDMSYNC_BUILD_JOBS:-2}"
bin_root="${IDMSYNC_CACHE:-$HOME/.cache/idmsync}/bin"

timer() {
  if [[ -x /usr/bin/time ]]; then /usr/bin/time -v -o "$1" "${@:2}"; else "${@:2}"; fi
}

# Print "[n/total] package" for every 25th package `go build -v` reports, and the last line.
progress() {
  local name="$1" total="$2"
  awk -v name="$name" -v total="$total" '
    { n++; last=$0; if (n % 25 == 1) { printf "  %s [%d/%s] %s\n", name, n, total, $0; fflush() } }
    END { if (n) printf "  %s [%d/%s] %s (compiled; linking done)\n", name, n, total, last }'
}

# Sample the summed RSS of this script's process tree every second; keep the peak (KiB) in $1.
# GNU time only reports the largest single process; with -p 2 several run at once.
sample_tree_rss() {
  local out="$1" root="$$" peak=0 now
  while :; do
    now=$(ps -e -o pid=,ppid=,rss= | awk -v root="$root" '
      { parent[$1] = $2; rss[$1] = $3 }
      END { for (p in parent) { q = p; while ((q in parent) && q != root && q > 1) q = parent[q]; if (q == root) sum += rss[p] } print sum + 0 }')
    if (( now > peak )); then peak=$now; echo "$peak" > "$out"; fi
    sleep 1
  done
}

summary() {
  local name="$1" report="$2"
  [[ -f "$report" ]] || return 0
  local wall rss tree
  wall=$(sed -n 's/.*Elapsed (wall clock) time.*: //p' "$report")
  rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$report")
  tree=$(sed -n 's/^Peak summed RSS of the build process tree (kbytes): //p' "$report")
  echo "  $name: build wall time $wall, peak RSS of one process $((${rss:-0} / 1024)) MiB, of all build processes together $((${tree:-0} / 1024)) MiB"
}

# build_go NAME VERSION DIR BINARY -- go build/install arguments...
build_go() {
  local name="$1" version="$2" dir="$3" binary="$4"; shift 5
  local out="$dir/$binary"
  if [[ -x "$out" ]]; then
    echo "$name $version: cached at $out"
    return 0
  fi
  mkdir -p "$dir"
  local tmp="$dir/.build"
  rm -rf "$tmp" && mkdir -p "$tmp"
  echo "$name $version: building into $out (go build -p $jobs; cold builds of kube-apiserver take 10-25 min)"
  local total='?'
  if [[ "${@: -1}" != *@* ]]; then total=$(cd "$here" && go list -deps "${@: -1}" | wc -l); fi
  local status sampler
  sample_tree_rss "$tmp/tree-rss" &
  sampler=$!
  set +e
  (cd "$here" && timer "$tmp/build-time.txt" "$@" 2>&1) | progress "$name" "$total"
  status=${PIPESTATUS[0]}
  set -e
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
  if [[ -f "$tmp/tree-rss" && -f "$tmp/build-time.txt" ]]; then
    echo "Peak summed RSS of the build process tree (kbytes): $(cat "$tmp/tree-rss")" >> "$tmp/build-time.txt"
  fi
  if [[ $status -ne 0 || ! -x "$tmp/$binary" ]]; then
    echo "$name $version: build FAILED (exit $status)" >&2
    [[ -f "$tmp/build-time.txt" ]] && cat "$tmp/build-time.txt" >&2
    return 1
  fi
  mv "$tmp/build-time.txt" "$dir/build-time.txt"
  mv "$tmp/$binary" "$out"
  rm -rf "$tmp"
  summary "$name" "$dir/build-time.txt"
}

build_kube_apiserver() {
  local dir="$bin_root/kube-$KUBE_VERSION" minor="${KUBE_VERSION#v1.}"
  minor="${minor%%.*}"
  local pkg=k8s.io/component-base/version
  # Without these the server reports v0.0.0-master.
  local ldflags="-s -w -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  build_go kube-apiserver "$KUBE_VERSION" "$dir" kube-apiserver -- \
    go build -p "$jobs" -v -ldflags "$ldflags" -o "$dir/.build/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
}

build_etcd() {
  local dir="$bin_root/etcd-$ETCD_VERSION"
  build_go etcd "$ETCD_VERSION" "$dir" etcd -- \
    go build -p "$jobs" -v -ldflags "-s -w" -o "$dir/.build/etcd" go.etcd.io/etcd/server/v3
}

build_helm() {
  local dir="$bin_root/helm-$HELM_VERSION" pkg=helm.sh/helm/v3/internal/version
  # helm is a plain `go install` of its own module: its dependencies are not mixed with ours.
  build_go helm "$HELM_VERSION" "$dir" helm -- \
    env GOBIN="$dir/.build" go install -p "$jobs" -v \
    -ldflags "-s -w -X $pkg.version=$HELM_VERSION -X $pkg.gitTreeState=clean" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(kube-apiserver etcd helm)
for target in "${targets[@]}"; do
  case "$target" in
    kube-apiserver) build_kube_apiserver ;;
    etcd) build_etcd ;;
    helm) build_helm ;;
    *) echo "unknown target $target (kube-apiserver, etcd, helm)" >&2; exit 2 ;;
  esac
done

echo "versions:"
for exe in "$bin_root/kube-$KUBE_VERSION/kube-apiserver" "$bin_root/etcd-$ETCD_VERSION/etcd" "$bin_root/helm-$HELM_VERSION/helm"; do
  [[ -x "$exe" ]] || continue
  case "$exe" in
    */kube-apiserver) echo "  kube-apiserver $("$exe" --version 2>&1 | head -1)  $exe" ;;
    */etcd) echo "  etcd $("$exe" --version 2>&1 | sed -n 's/^etcd Version: //p')  $exe" ;;
    */helm) echo "  helm $("$exe" version --short 2>&1)  $exe" ;;
  esac
done
