#!/bin/sh
# Runs inside a fresh minimal Debian chroot (scripts/sdk/chroot-test.sh sets it up): proves
# there is no QEMU, virtiofsd or vhost-device-vsock here, installs the SDK with `-d DIR -y`,
# moves the tree, sources init-env.sh from the new place, then from the moved tree:
#   basic: vpdmn on a memres VM: vimport of a busybox dir, vrun prints x86_64, and a
#          detached container's write to a live (virtiofs) volume shows up while it runs;
#   full:  the same, plus vdkr (vimport + vrun, x86_64) and vpdmn-aarch64 (prints aarch64).
#
#   sh chroot-inner.sh SUITE basic|full INSTALLER
set -eu
suite=$1
depth=$2
installer=$3
log() { echo "sdk-test[$suite]: $*" >&2; }
die() {
    log "FAIL: $*"
    exit 1
}
# each VM command gets a generous bound: TCG on a busy 2-core host
t() { timeout 900 "$@"; }

for p in qemu-system-x86_64 qemu-system-aarch64 virtiofsd vhost-device-vsock; do
    if command -v "$p" >/dev/null 2>&1; then die "$p is installed in the chroot"; fi
done
found=$(find / -xdev \( -name 'qemu-system-*' -o -name virtiofsd -o -name vhost-device-vsock \) -print 2>/dev/null | head -n 3)
[ -z "$found" ] || die "found in the chroot before installing: $found"
log "$(ldd --version 2>/dev/null | head -n 1)"

sh "$installer" -d /opt/first -y >&2 || die "the installer failed"
mkdir -p "/opt/moved here"
mv /opt/first "/opt/moved here/sdk"
sdk="/opt/moved here/sdk"
# dash: init-env.sh finds itself through /proc/$$/fd
. "$sdk/init-env.sh" || die "sourcing init-env.sh failed"
[ "$(command -v vpdmn)" = "$sdk/bin/vpdmn" ] || die "vpdmn is not the moved SDK's: $(command -v vpdmn)"
(cd "$sdk" && sha256sum -c --quiet MANIFEST) || die "MANIFEST does not match the moved tree"
if grep -rlF /opt/first "$sdk" >/dev/null 2>&1; then
    die "the moved tree still names /opt/first: $(grep -rlF /opt/first "$sdk" | head -n 3)"
fi
doctor=$(vpdmn doctor 2>&1) || true
printf '%s\n' "$doctor" >&2
for want in "qemu: $sdk/bin/../libexec/qemu-system-x86_64" "with $sdk/bin/../libexec/virtiofsd (bundled)" \
    "mkfs.ext4 at $sdk/bin/../libexec/mkfs.ext4 (bundled)"; do
    case $doctor in *"$want"*) ;; *) die "doctor does not report '$want'" ;; esac
done

stop_all() {
    for tool in vpdmn vdkr vpdmn-aarch64; do
        "$tool" memres stop >/dev/null 2>&1 || true
    done
}
trap stop_all EXIT

# guest_checks TOOL ARCH LIVE: memres start, vimport, vrun prints ARCH; with LIVE=1 a
# detached container's write into a live volume is on this side while it runs
guest_checks() {
    tool=$1
    want=$2
    log "$tool: memres start"
    t "$tool" memres start >&2 || die "$tool memres start"
    t "$tool" vimport "/srv/bb-$want" bb:1 >&2 || die "$tool vimport"
    got=$(t "$tool" vrun bb:1 uname -m) || die "$tool vrun"
    [ "$got" = "$want" ] || die "$tool vrun printed '$got', not '$want'"
    log "$tool: vrun printed $got"
    if [ "$3" = 1 ]; then
        status=$(t "$tool" memres status 2>&1) || die "$tool memres status"
        case $status in
            *"live volumes (virtiofs"*) ;;
            *) die "$tool: the memres VM has no live volumes: $status" ;;
        esac
        vol=/root/vol-$tool
        mkdir -p "$vol"
        echo from-host >"$vol/host.txt"
        t "$tool" run -d --name live -v "$vol:/data" bb:1 \
            sh -c 'trap "exit 0" TERM; cat /data/host.txt > /data/seen.txt; sleep 600 & wait' >&2 ||
            die "$tool run -d"
        n=0
        until [ "$(cat "$vol/seen.txt" 2>/dev/null)" = from-host ]; do
            n=$((n + 1))
            [ "$n" -le 240 ] || die "$tool: the container's write did not reach $vol while it ran"
            sleep 0.5
        done
        log "$tool: live volume ok (the running container's write is here)"
        t "$tool" rm -f live >&2 || die "$tool rm -f"
    fi
    t "$tool" memres stop >&2 || die "$tool memres stop"
}

guest_checks vpdmn x86_64 1
if [ "$depth" = full ]; then
    guest_checks vdkr x86_64 0
    guest_checks vpdmn-aarch64 aarch64 0
fi
# nothing left running from the SDK
sleep 1
for p in /proc/[0-9]*; do
    exe=$(readlink "$p/exe" 2>/dev/null) || continue
    case $exe in "$sdk"/*) die "left running: $exe (pid ${p#/proc/})" ;; esac
done
log "passed ($depth)"
