#!/usr/bin/env bash
# Builds the vcontainer guest blobs (called by `make guest`):
#   build/blobs/<arch>/<runtime>/{bzImage|Image, initramfs.cpio.gz, rootfs.img, blobs.json}
# 1. the static guest agent (glibc crt-static, built for an explicit --target so the
#    RUSTFLAGS do not invalidate the workspace's shared host build cache),
# 2. the builder (crate vcontainer-guest-image),
# 3. one blob set per runtime. The slow rootfs stage (mmdebstrap + mksquashfs, ~1-2 min per
#    runtime) is cached in build/cache by its inputs; a changed agent only redoes the
#    initramfs (seconds).
#
# Needs root (mmdebstrap --mode=root), network access to the Debian mirror, and the tools
# scripts/setup-host.sh installs (mmdebstrap, squashfs-tools, xz-utils, zstd).
#
# Environment:
#   GUEST_ARCH        "x86_64 aarch64" (default: both), or one of them. The aarch64 agent is
#                     cross-built in a Debian trixie chroot (scripts/build-agent-cross.sh, since
#                     rustup cannot fetch targets here) and the arm64 rootfs is made by
#                     mmdebstrap through qemu-user-static's binfmt handler (docs/aarch64.md)
#   GUEST_RUNTIMES    runtimes to build (default: "docker podman")
#   GUEST_SUITE       Debian suite (default: bookworm)
#   GUEST_MIRROR      Debian mirror (default: http://deb.debian.org/debian)
#   GUEST_COMPRESSION squashfs compressor: lz4 (default), lz4hc, zstd
#   GUEST_AGENT       use this agent binary instead of building vcontainer-agent (one arch only)
#   GUEST_REBUILD=1   rebuild the rootfs even when cached (pick up Debian updates)
#   GUEST_PARALLEL=0  build the runtimes' sets one after the other (default: side by side)
#   BLOB_DIR / CACHE_DIR  output and cache (default: build/blobs, build/cache)
#   GUEST_CACHE_DAYS  cache entries unused for this many days are pruned (default: 14)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

arches=${GUEST_ARCH:-x86_64 aarch64}
runtimes=${GUEST_RUNTIMES:-docker podman}
suite=${GUEST_SUITE:-bookworm}
mirror=${GUEST_MIRROR:-http://deb.debian.org/debian}
compression=${GUEST_COMPRESSION:-lz4}
blob_dir=${BLOB_DIR:-$repo/build/blobs}
cache_dir=${CACHE_DIR:-$repo/build/cache}
export CACHE_DIR=$cache_dir GUEST_MIRROR=$mirror

# Each runtime's Debian packages and config files come from its runtime plugin
# (runtimes/<name>, libvcontainer_runtime_<name>.so); the builder adds the kernel and the
# common guest tools (e2fsprogs, iproute2, kmod, ca-certificates, util-linux, procps).

for arch in $arches; do
  case "$arch" in
    x86_64|aarch64) ;;
    *) echo "build-guest.sh: unknown GUEST_ARCH '$arch' (x86_64 or aarch64)" >&2; exit 2 ;;
  esac
done
if [ -n "${GUEST_AGENT:-}" ] && [ "$(echo $arches | wc -w)" -ne 1 ]; then
  echo "build-guest.sh: GUEST_AGENT names one agent; set GUEST_ARCH to its one arch" >&2; exit 2
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "build-guest.sh: run as root (mmdebstrap --mode=root keeps real file owners)" >&2
  exit 1
fi
for tool in mmdebstrap mksquashfs; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "build-guest.sh: $tool not found; run scripts/setup-host.sh" >&2; exit 1; }
done

start=$(date +%s)
log() { echo "build-guest: [$(( $(date +%s) - start ))s] $*" >&2; }

# a foreign-arch rootfs runs its packages' maintainer scripts through qemu-user: the binfmt
# handler must be registered (scripts/setup-host.sh does it; a reboot or a fresh container
# loses it, so check here rather than fail deep inside mmdebstrap)
host_arch=$(uname -m)
for arch in $arches; do
  [ "$arch" = "$host_arch" ] && continue
  handler=/proc/sys/fs/binfmt_misc/qemu-$arch
  if [ ! -e "$handler" ] || ! grep -qx enabled "$handler"; then
    echo "build-guest.sh: no binfmt handler for $arch ($handler); run scripts/setup-host.sh" >&2
    exit 1
  fi
done

# 1. the builder and the runtime plugins it reads the package sets from
log "building vcontainer-guest-image and the runtime plugins"
plugin_pkgs=()
for runtime in $runtimes; do plugin_pkgs+=(-p "vcontainer-runtime-$runtime"); done
cargo build -p vcontainer-guest-image "${plugin_pkgs[@]}"
builder=$repo/target/debug/vcontainer-guest-image

# 2. the agent of one arch: native with the host's cargo, foreign in the cross chroot
agent_for() {
  local arch=$1 triple=$1-unknown-linux-gnu
  if [ -n "${GUEST_AGENT:-}" ]; then
    echo "$GUEST_AGENT"
  elif [ "$arch" = "$host_arch" ]; then
    # an explicit --target keeps the static RUSTFLAGS away from the host build cache
    RUSTFLAGS="-C target-feature=+crt-static" \
      cargo build --release -p vcontainer-agent --target "$triple" >&2
    echo "$repo/target/$triple/release/vcontainer-agent"
  else
    "$repo/scripts/build-agent-cross.sh" "$arch"
  fi
}

mkdir -p "$cache_dir" "$blob_dir"
for arch in $arches; do
  log "agent for $arch"
  agent=$(agent_for "$arch")
  [ -f "$agent" ] || { echo "build-guest.sh: agent $agent missing" >&2; exit 1; }
  # PID 1 in an initramfs without a libc: a dynamic agent would die before main()
  if command -v readelf >/dev/null 2>&1 && readelf -l "$agent" 2>/dev/null | grep -q 'program interpreter'; then
    echo "build-guest.sh: $agent is dynamically linked; build it with -C target-feature=+crt-static" >&2
    exit 1
  fi

  # 3. the blob sets, one builder at a time per cache
  (
    exec 9>"$cache_dir/.lock"
    flock 9
    "$builder" clean-temps --cache "$cache_dir"
    extra=()
    [ "${GUEST_REBUILD:-0}" = 1 ] && extra+=(--rebuild-rootfs)
    # the runtimes' sets side by side: each rootfs is mostly one single-threaded dpkg (under
    # qemu-user for a foreign arch, where one set takes minutes), their cache keys and blob
    # dirs differ, and the cache lock taken above is shared by the children
    pids=()
    for runtime in $runtimes; do
      log "guest for $arch/$runtime"
      "$builder" build --arch "$arch" --plugin "$repo/target/debug/libvcontainer_runtime_$runtime.so" \
        --runtime "$runtime" --agent "$agent" --suite "$suite" --mirror "$mirror" \
        --compression "$compression" --out "$blob_dir" --cache "$cache_dir" "${extra[@]}" &
      if [ "${GUEST_PARALLEL:-1}" = 1 ]; then pids+=($!); else wait "$!" || exit 1; fi
    done
    failed=0
    for pid in ${pids[@]+"${pids[@]}"}; do wait "$pid" || failed=1; done
    [ "$failed" = 0 ] || { echo "build-guest.sh: a $arch guest failed to build (above)" >&2; exit 1; }
  )
  log "done: $(du -sh "$blob_dir/$arch" | cut -f1) in $blob_dir/$arch"
done
# old package sets / agents leave entries of hundreds of MB; published blobs are hard links
(
  exec 9>"$cache_dir/.lock"
  flock 9
  "$builder" prune --cache "$cache_dir" --days "${GUEST_CACHE_DAYS:-14}"
)
