#!/usr/bin/env bash
# Build the operator image without a container daemon:
#   1. mmdebstrap: a Debian rootfs (essential packages + python3, no docs, man pages, locales),
#      cached under $IDMSYNC_CACHE/image by a hash of this recipe and the apt sources;
#   2. uv: the hashed requirements.lock (--require-hashes) and our wheel into
#      /usr/local/lib/python3.11/dist-packages, minus what the operator never imports;
#   3. buildah (vfs storage, chroot isolation): two layers (base, app), numeric non-root USER,
#      ENTRYPOINT idmsync, CMD run, written as an OCI archive.
# Output: $IDMSYNC_IMAGE_DIR (default build/image)/idmsync-operator-<version>.oci.tar holding
# idmsync/idmsync-operator:<version>, and image.env describing it. Needs root (apt-get installs
# mmdebstrap and buildah when missing). PYTHON (with `build` and hatchling) and UV as in the
# Makefile.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -1)
image="idmsync/idmsync-operator:$version"
out="${IDMSYNC_IMAGE_DIR:-$repo/build/image}"
cache="${IDMSYNC_CACHE:-$HOME/.cache/idmsync}/image"
python="${PYTHON:-$repo/.venv/bin/python}"
uv="${UV:-uv}"
suite=bookworm
uid=65532
pyver=3.11
site="usr/local/lib/python$pyver/dist-packages"
sources="${IDMSYNC_APT_SOURCES:-/etc/apt/sources.list.d/debian.sources}"
[[ -f "$sources" ]] || sources=/etc/apt/sources.list
epoch="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
started=$(date +%s)

step() { echo "image: $* ($(( $(date +%s) - started ))s)"; }

missing=()
for tool in mmdebstrap buildah; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if (( ${#missing[@]} )); then
  step "installing ${missing[*]} from Debian's packages"
  if [[ $(id -u) -ne 0 ]]; then
    echo "image: ${missing[*]} missing and not root: apt-get install ${missing[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/idmsync-image.XXXXXX")
storage=(--storage-driver vfs --root "$work/storage" --runroot "$work/run")
cleanup() {
  buildah "${storage[@]}" rm --all >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# ---- 1. the Debian base, cached
base_args=(
  --variant=essential --include=python3
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr  # usr-is-merged, not usrmerge (and its perl)
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-exclude=/usr/lib/x86_64-linux-gnu/gconv/*'  # Python has its own codecs
  --customize-hook='rm -rf "$1"/var/cache/* "$1"/var/lib/apt/lists/* "$1"/var/log/*'
  --customize-hook="echo 'idmsync:x:$uid:$uid:idmsync:/nonexistent:/usr/sbin/nologin' >> \"\$1\"/etc/passwd"
  --customize-hook="echo 'idmsync:x:$uid:' >> \"\$1\"/etc/group"
)
key=$( (printf '%s\n' "$suite" "${base_args[@]}"; cat "$sources"; mmdebstrap --version) | sha256sum | cut -c1-16)
rootfs="$cache/debian-$suite-python3-$key.tar"
if [[ ! -f "$rootfs" ]]; then
  step "mmdebstrap $suite + python3 -> $rootfs"
  mkdir -p "$cache"
  SOURCE_DATE_EPOCH="$epoch" mmdebstrap --format=tar "${base_args[@]}" "$suite" \
    "$cache/partial-$key.tar" "$sources" >"$work/mmdebstrap.log" 2>&1 \
    || { tail -40 "$work/mmdebstrap.log" >&2; exit 1; }
  mv "$cache/partial-$key.tar" "$rootfs"
else
  step "Debian base cached: $rootfs"
fi

# ---- 2. the application: locked dependencies (hashes checked), then our wheel. The whole
# image is rebuilt only when this script, the lock, the package or the base changed.
archive="$out/idmsync-operator-$version.oci.tar"
inputs=$( (echo "$key"; git ls-files -s tools/image operator pyproject.toml requirements.lock README.md;
  git diff HEAD -- tools/image operator pyproject.toml requirements.lock README.md) | sha256sum | cut -c1-16)
if [[ -f "$archive" && -f "$out/image.env" ]] && grep -qx "INPUTS=$inputs" "$out/image.env"; then
  step "up to date: $archive"
  exit 0
fi
step "wheel + locked dependencies"
"$python" -m build --wheel --no-isolation --outdir "$work/dist" . >"$work/build.log" 2>&1 \
  || { cat "$work/build.log" >&2; exit 1; }
wheel=("$work"/dist/idmsync_operator-"$version"-py3-none-any.whl)
app="$work/app"
target=(--target "$app/$site" --python-version "$pyver" --python-platform x86_64-manylinux_2_36)
"$uv" pip install --quiet "${target[@]}" --require-hashes --no-deps -r requirements.lock
"$uv" pip install --quiet "${target[@]}" --no-deps "${wheel[0]}"
# what the operator never imports: the kubernetes client's asyncio copy (42 MB; kopf talks to
# the API itself, our code uses the sync client), test suites, console scripts written for the
# build host's interpreter, byte code (the root filesystem is read-only anyway)
rm -rf "$app/$site/kubernetes/aio" "$app/$site/bin"
find "$app/$site" -depth -type d \( -name tests -o -name test -o -name __pycache__ \) -exec rm -rf {} +
install -d "$app/usr/local/bin"
# the console script of the wheel's entry point `idmsync = idmsync.cli:main`
printf '#!/usr/bin/python3\nimport sys\nfrom idmsync.cli import main\nsys.exit(main())\n' \
  >"$app/usr/local/bin/idmsync"
chmod 0755 "$app/usr/local/bin/idmsync"
find "$app" -exec touch -h -d "@$epoch" {} +

# ---- 3. the image
step "buildah: base layer"
ctr=$(buildah "${storage[@]}" from scratch)
buildah "${storage[@]}" add "$ctr" "$rootfs" / >/dev/null
buildah "${storage[@]}" commit --quiet --timestamp "$epoch" "$ctr" idmsync-base >/dev/null
step "buildah: application layer"
ctr=$(buildah "${storage[@]}" from idmsync-base)
buildah "${storage[@]}" add "$ctr" "$app" / >/dev/null
# the image must run as it will in a pod: as its numeric user, from its own entrypoint
buildah "${storage[@]}" run --isolation chroot --user "$uid:$uid" "$ctr" -- \
  /usr/local/bin/idmsync --version >"$work/version"
grep -qx "idmsync $version" "$work/version" || { cat "$work/version" >&2; exit 1; }
buildah "${storage[@]}" config \
  --user "$uid:$uid" --workingdir / \
  --entrypoint '["/usr/local/bin/idmsync"]' --cmd '["run"]' \
  --env PYTHONDONTWRITEBYTECODE=1 --env PYTHONUNBUFFERED=1 \
  --label org.opencontainers.image.title=idmsync-operator \
  --label org.opencontainers.image.version="$version" \
  --label org.opencontainers.image.licenses=Apache-2.0 \
  --label org.opencontainers.image.description="Resets the liveSync syncToken of ForgeRock IDM" \
  "$ctr"
mkdir -p "$out"
rm -f "$archive" "$out/image.env"
buildah "${storage[@]}" commit --quiet --timestamp "$epoch" --disable-compression=false \
  "$ctr" "oci-archive:$archive:$image" >/dev/null

cat >"$out/image.env" <<EOF
IMAGE=$image
ARCHIVE=$archive
ENTRYPOINT=/usr/local/bin/idmsync
CMD=run
USER=$uid:$uid
INPUTS=$inputs
EOF
step "done: $image -> $archive"
echo "image: archive $(du -h "$archive" | cut -f1) (compressed layers), rootfs $(du -sh --apparent-size "$rootfs" | cut -f1) + app $(du -sh --apparent-size "$app" | cut -f1) unpacked"
