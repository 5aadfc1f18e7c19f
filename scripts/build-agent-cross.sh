#!/usr/bin/env bash
# Builds the static guest agent for a foreign guest arch (aarch64) on an x86_64 host, without
# rustup: rustup cannot download targets on the build machines, but Debian trixie ships
# rustc/cargo 1.85 with the arm64 standard library (libstd-rust-dev:arm64), the cross gcc
# (gcc-aarch64-linux-gnu) and the arm64 static glibc (libc6-dev:arm64). Those live in a trixie
# chroot (amd64 with arm64 as a foreign dpkg architecture) made once with mmdebstrap and
# cached under build/cache by what goes into it; the build itself runs in a private mount
# namespace (the bind mounts vanish with it, whatever happens) with the repo mounted
# read-only, cargo's registry and target dirs in the cache. docs/aarch64.md says more.
#
#   scripts/build-agent-cross.sh aarch64      prints the agent's path on stdout
#
# Needs root (mmdebstrap --mode=root, chroot, unshare) and the Debian mirror + crates.io.
# Environment: CACHE_DIR (default build/cache), GUEST_MIRROR (default deb.debian.org),
#              CROSS_REBUILD=1 makes the chroot anew (pick up Debian updates).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

arch=${1:-aarch64}
case "$arch" in
  aarch64) triple=aarch64-unknown-linux-gnu; deb_arch=arm64; cc=aarch64-linux-gnu-gcc ;;
  *) echo "build-agent-cross.sh: no cross build for '$arch' (aarch64 only)" >&2; exit 2 ;;
esac
[ "$(id -u)" -eq 0 ] || { echo "build-agent-cross.sh: run as root (mmdebstrap, chroot)" >&2; exit 1; }

suite=trixie
mirror=${GUEST_MIRROR:-http://deb.debian.org/debian}
cache=${CACHE_DIR:-$repo/build/cache}/cross-$suite
packages="rustc,cargo,libstd-rust-dev:$deb_arch,gcc-$(echo "$cc" | sed 's/-gcc$//'),libc6-dev:$deb_arch,ca-certificates"
# the chroot's key: what goes into it (bump the recipe number when the mmdebstrap call changes)
recipe=1
key=$(echo "recipe=$recipe $suite $mirror $packages" | sha256sum | cut -c1-16)
root=$cache/root-$key

start=$(date +%s)
log() { echo "build-agent-cross: [$(( $(date +%s) - start ))s] $*" >&2; }

mkdir -p "$cache"
exec 8>"$cache/.lock"
flock 8

# 1. the toolchain chroot, made once per key; a killed run leaves only a .tmp that the next
#    run removes, never a half chroot under the final name
if [ "${CROSS_REBUILD:-0}" = 1 ] || [ ! -f "$root/.complete" ]; then
  rm -rf "$cache"/root-*
  log "making the $suite toolchain chroot ($packages)"
  mmdebstrap --variant=minbase --mode=root --architectures="amd64,$deb_arch" \
    --include="$packages" --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    "$suite" "$root.tmp" "$mirror" >"$cache/mmdebstrap.log" 2>&1 \
    || { tail -30 "$cache/mmdebstrap.log" >&2; rm -rf "$root.tmp"; exit 1; }
  touch "$root.tmp/.complete"
  mv "$root.tmp" "$root"
fi
log "toolchain: $(chroot "$root" rustc --version)"

# 2. the agent, static (PID 1 in an initramfs without a libc), in a private mount namespace
mkdir -p "$cache/cargo-home" "$cache/target" "$root/src" "$root/cargo-home" "$root/target"
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
unshare --mount --propagation private -- sh -euc '
  root=$1 repo=$2 cache=$3
  mount --bind "$repo" "$root/src"
  mount -o remount,bind,ro "$root/src"
  mount --bind "$cache/cargo-home" "$root/cargo-home"
  mount --bind "$cache/target" "$root/target"
  mount -t proc proc "$root/proc"
  mount --bind /dev "$root/dev"
  # crates.io is reached as the host reaches it: through the host'"'"'s CA bundle (which may hold
  # a site proxy'"'"'s CA)
  mount -o ro --bind /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  exec chroot "$root" env -i PATH=/usr/bin:/bin HOME=/root \
    CARGO_HOME=/cargo-home CARGO_TARGET_DIR=/target CARGO_TERM_COLOR=never \
    ${https_proxy:+https_proxy=$https_proxy} ${HTTPS_PROXY:+HTTPS_PROXY=$HTTPS_PROXY} \
    RUSTFLAGS="-C target-feature=+crt-static" \
    CARGO_TARGET_'"$(echo "$triple" | tr a-z- A-Z_)"'_LINKER='"$cc"' \
    cargo build --release --locked -p vcontainer-agent --target '"$triple"' \
      --manifest-path /src/Cargo.toml
' sh "$root" "$repo" "$cache" >&2
agent=$cache/target/$triple/release/vcontainer-agent
[ -f "$agent" ] || { echo "build-agent-cross.sh: no agent at $agent" >&2; exit 1; }
log "built $agent"
echo "$agent"
