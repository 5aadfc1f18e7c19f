#!/usr/bin/env bash
# Fetches Debian's busybox-static for the foreign arches the end-to-end tests build images for:
# arm64 (the aarch64 guest's own), armhf (arm/v7 images on the aarch64 guest) and i386 (386
# images on the x86_64 guest). The host's own busybox (amd64) comes from busybox-static on the
# host. tests/src/lib.rs (busybox_for) reads them from here.
#
# The .debs come from a private apt state under the cache (scripts/lib/private-apt.sh).
# Idempotent: exits at once when every binary is there.
#
#   output: ${CACHE_DIR:-build/cache}/test-busybox/<debian arch>/busybox
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
cache=${CACHE_DIR:-$repo/build/cache}/test-busybox
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=${DEBIAN_SUITE:-bookworm}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
arches="arm64 armhf i386"

log() { echo "fetch-test-busybox: $*" >&2; }
die() { log "$*"; exit 1; }

missing=
for a in $arches; do [ -s "$cache/$a/busybox" ] || missing="$missing $a"; done
if [ -z "$missing" ]; then log "up to date: $cache"; exit 0; fi

for tool in apt-get dpkg-deb; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is missing"
done
[ -r "$keyring" ] || die "$keyring missing (package debian-archive-keyring)"

. "$repo/scripts/lib/private-apt.sh"
private_apt "$cache/apt" "$mirror" "$suite" "$keyring" "$arches"
apt-get -q "${apt_opts[@]}" update >"$cache/apt-update.log" 2>&1 \
  || { cat "$cache/apt-update.log" >&2; die "apt-get update (private state) failed"; }

work=$(mktemp -d "$cache/.work-XXXXXX")
trap 'rm -rf "$work"' EXIT
for a in $missing; do
  (cd "$work" && apt-get -q "${apt_opts[@]}" download "busybox-static:$a" >/dev/null) \
    || die "download of busybox-static:$a failed"
  deb=$(ls "$work"/busybox-static_*_"$a".deb)
  dpkg-deb -x "$deb" "$work/x-$a"
  mkdir -p "$cache/$a"
  # rename last: a present binary is always a whole one
  cp "$work/x-$a/bin/busybox" "$cache/$a/busybox.tmp"
  mv "$cache/$a/busybox.tmp" "$cache/$a/busybox"
  log "$a: $(basename "$deb")"
done
