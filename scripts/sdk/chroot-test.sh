#!/usr/bin/env bash
# `make sdk-test`: proof that the SDK installer stands alone (issue 17). For each suite, a
# fresh minimal Debian chroot (mmdebstrap --variant=minbase: no QEMU, no virtiofsd, no
# vhost-device-vsock, bullseye's glibc 2.31 older than the build host's) gets the real
# installer; scripts/sdk/chroot-inner.sh then installs, moves the tree, sources init-env.sh
# and boots guests from the moved tree (see that file for what each suite checks).
#
# The chroot tarballs are cached under build/cache/sdk-chroots (a rerun only unpacks them);
# each run unpacks a fresh copy under /var/tmp and removes it afterwards. Needs root (chroot,
# mounts) and, for the first run, the network.
#
# Environment: SDK_INSTALLER (build/sdk/vcontainer-standalone-<arch>.sh), CACHE_DIR
# (build/cache), DEBIAN_MIRROR, SDK_TEST_SUITES ("bullseye:full trixie:basic": suite and
# depth; full adds vdkr and the aarch64 guest), TEST_BUSYBOX_DIR (build/cache/test-busybox,
# from scripts/fetch-test-busybox.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd -P)
arch=$(uname -m)
installer=${SDK_INSTALLER:-$repo/build/sdk/vcontainer-standalone-$arch.sh}
cache=${CACHE_DIR:-$repo/build/cache}
chroots=$cache/sdk-chroots
busyboxes=${TEST_BUSYBOX_DIR:-$cache/test-busybox}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
suites=${SDK_TEST_SUITES:-bullseye:full trixie:basic}

log() { echo "sdk-test: $*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (chroot and mounts)"
[ -f "$installer" ] || die "no installer at $installer (make sdk)"
for tool in mmdebstrap chroot mount umount tar; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (scripts/setup-host.sh)"
done
host_busybox=$(command -v busybox || true)
[ -n "$host_busybox" ] || die "busybox is missing (busybox-static, scripts/setup-host.sh)"
[ -s "$busyboxes/arm64/busybox" ] || die "no $busyboxes/arm64/busybox (scripts/fetch-test-busybox.sh)"

work=
cleanup() {
    [ -n "$work" ] || return 0
    local r=$work/root
    # whatever still runs inside the chroot (a VM left by a failed check): by pid
    local p
    for p in /proc/[0-9]*; do
        [ "$(readlink "$p/root" 2>/dev/null)" = "$r" ] && kill -9 "${p#/proc/}" 2>/dev/null
    done
    sleep 1
    umount -R "$r/srv/sdk" "$r/dev" "$r/proc" "$r/sys" 2>/dev/null || true
    umount "$r" 2>/dev/null || true
    if mountpoint -q "$r" 2>/dev/null || grep -qF " $r/" /proc/self/mounts; then
        log "WARNING: mounts left under $r; not removing it"
    else
        rm -rf -- "$work"
    fi
    work=
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# a minimal static busybox rootfs dir for `vimport` (the guest's arch)
busybox_dir() { # busybox_dir BUSYBOX DIR
    mkdir -p "$2/bin"
    cp "$1" "$2/bin/busybox"
    chmod 0755 "$2/bin/busybox"
    local a
    for a in sh echo cat uname sleep ls true; do ln -s busybox "$2/bin/$a"; done
}

for entry in $suites; do
    suite=${entry%%:*}
    depth=${entry#*:}
    [ "$depth" != "$entry" ] || depth=basic
    start=$(date +%s)
    mkdir -p "$chroots"
    tarball=$chroots/$suite-$arch.tar
    if [ ! -s "$tarball" ]; then
        log "$suite: mmdebstrap --variant=minbase (cached in $tarball)"
        mmdebstrap --quiet --variant=minbase --format=tar "$suite" "$tarball.tmp" "$mirror" >&2
        mv -f "$tarball.tmp" "$tarball"
    fi
    work=$(mktemp -d /var/tmp/vcontainer-sdk-test.XXXXXX)
    r=$work/root
    mkdir "$r"
    tar -C "$r" -xf "$tarball"
    # a mount point as the chroot's root: virtiofsd's sandbox pivots its root, which a
    # plain chroot dir refuses (pivot_root needs the current root to be a mount)
    mount --bind "$r" "$r"
    mount -t proc proc "$r/proc"
    mount -t sysfs -o ro sysfs "$r/sys"
    # /dev/kvm and /dev/vhost-vsock where the host has them, /dev/null, /dev/pts, /dev/shm
    mount --rbind /dev "$r/dev"
    mount --make-rslave "$r/dev"
    mkdir -p "$r/srv/sdk"
    mount --bind -o ro "$(dirname "$installer")" "$r/srv/sdk"
    mount -o remount,bind,ro "$r/srv/sdk"
    busybox_dir "$host_busybox" "$r/srv/bb-x86_64"
    busybox_dir "$busyboxes/arm64/busybox" "$r/srv/bb-aarch64"
    cp scripts/sdk/chroot-inner.sh "$r/srv/chroot-inner.sh"
    log "$suite ($depth): running the installer and the guests inside the chroot"
    chroot "$r" /usr/bin/env -i HOME=/root PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin \
        LANG=C.UTF-8 /bin/sh /srv/chroot-inner.sh "$suite" "$depth" "/srv/sdk/$(basename "$installer")" ||
        die "$suite: FAILED (see above)"
    cleanup
    log "$suite ($depth): ok in $(($(date +%s) - start)) s"
done
log "all passed: $suites"
