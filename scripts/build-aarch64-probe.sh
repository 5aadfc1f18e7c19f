#!/usr/bin/env bash
# Builds the aarch64 boot probe: Debian bookworm's real arm64 cloud kernel as a raw `Image`
# plus a tiny initramfs whose /init is a busybox-static (arm64) script that loads the virtio
# modules, prints one marker line (`VCPROBE arch=<uname -m> ... virtio=<id:driver,...>`) and
# powers off. tests/tests/aarch64_boot.rs boots it with the QEMU command line our own code
# builds for aarch64 (core/vm/src/vm/qemu.rs), which proves that command line boots an arm64
# Debian kernel, although this host cannot build an aarch64 agent (no aarch64 Rust target).
#
# The .debs come from a private apt state under the cache (APT::Architecture=arm64, its own
# sources list and lists dir): the host's dpkg architecture list is never touched, and apt still
# checks the Debian archive signatures. Idempotent: when the output matches this script's hash
# it exits at once, without network; PROBE_REFRESH=1 re-resolves the newest packages.
#
#   output: $PROBE_DIR (default build/cache/aarch64-probe/out): Image, initramfs.cpio.gz,
#           kernel_version
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
cache=${CACHE_DIR:-$repo/build/cache}/aarch64-probe
out=${PROBE_DIR:-$cache/out}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=${DEBIAN_SUITE:-bookworm}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
# the modules the probe loads (their dependencies are added from each module's modinfo):
# PCI transport, then one driver per device class the vcontainer VM has
modules="virtio_pci virtio_net virtio_blk vmw_vsock_virtio_transport"
applets="sh mount uname cat ls insmod poweroff basename readlink echo"

log() { echo "build-aarch64-probe: $*" >&2; }
die() { log "$*"; exit 1; }

# inputs that change the output: this script, the suite and (after resolving) the package files
script_hash=$(sha256sum "$0" | cut -c1-16)
if [ "${PROBE_REFRESH:-0}" != 1 ] && [ -f "$out/stamp" ] && [ -f "$out/Image" ] \
   && [ -f "$out/initramfs.cpio.gz" ] && grep -qx "script=$script_hash suite=$suite" "$out/stamp"; then
  log "up to date: $out ($(cat "$out/kernel_version"))"
  exit 0
fi

for tool in apt-get apt-cache dpkg-deb cpio gzip; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (scripts/setup-host.sh installs it)"
done
[ -r "$keyring" ] || die "$keyring missing (package debian-archive-keyring)"

# --- private apt state: arm64 only, nothing shared with the host's apt ---------------------
. "$repo/scripts/lib/private-apt.sh"
private_apt "$cache/apt" "$mirror" "$suite" "$keyring" arm64
mkdir -p "$cache/debs"
log "resolving $suite arm64 packages from $mirror"
apt-get -q "${apt_opts[@]}" update >"$cache/apt-update.log" 2>&1 \
  || { cat "$cache/apt-update.log" >&2; die "apt-get update (arm64, private state) failed"; }

# the metapackage names the versioned kernel package
kpkg=$(apt-cache "${apt_opts[@]}" depends linux-image-cloud-arm64 \
       | sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-arm64\)$/\1/p' | head -1)
[ -n "$kpkg" ] || die "cannot resolve linux-image-cloud-arm64 to a kernel package"

# download a package into debs/ unless that exact file is there already
fetch_deb() {
  local pkg=$1 ver file
  ver=$(apt-cache "${apt_opts[@]}" show --no-all-versions "$pkg" | sed -n 's/^Version: //p' | head -1)
  [ -n "$ver" ] || die "no candidate version of $pkg for arm64 in $suite"
  # apt-get download's file name: the epoch colon escaped as %3a
  file=${pkg}_${ver//:/%3a}_arm64.deb
  if [ ! -s "$cache/debs/$file" ]; then
    (cd "$cache/debs" && apt-get -q "${apt_opts[@]}" download "$pkg=$ver" >/dev/null) || die "download of $pkg failed"
  fi
  [ -s "$cache/debs/$file" ] || die "$pkg: $file not found after download"
  echo "$cache/debs/$file"
}
kdeb=$(fetch_deb "$kpkg")
bdeb=$(fetch_deb busybox-static)
log "kernel $(basename "$kdeb"), busybox $(basename "$bdeb")"

# --- unpack --------------------------------------------------------------------------------
work=$(mktemp -d "$cache/.work-XXXXXX")
trap 'rm -rf "$work"' EXIT
dpkg-deb -x "$kdeb" "$work/kernel"
dpkg-deb -x "$bdeb" "$work/busybox"
vmlinuz=$(find "$work/kernel/boot" -maxdepth 1 -name 'vmlinuz-*' | sort | head -1)
[ -n "$vmlinuz" ] || die "no /boot/vmlinuz-* in $(basename "$kdeb")"
kver=${vmlinuz##*/vmlinuz-}
moddir=$work/kernel/lib/modules/$kver
[ -d "$moddir" ] || die "no module tree for $kver"

# --- kernel: QEMU's -kernel takes a raw arm64 Image (the blob contract's `Image`) ----------
# bookworm ships the raw Image as vmlinuz; other kernels gzip it or wrap it in an EFI zboot
# image (PE "MZ" header with "zimg" at offset 4), which has to be unpacked first.
image=$work/Image
magic=$(head -c 4 "$vmlinuz" | od -An -tx1 | tr -d ' \n')
if [ "$(dd if="$vmlinuz" bs=1 skip=56 count=4 2>/dev/null)" = $'ARM\x64' ]; then
  cp "$vmlinuz" "$image"
elif [ "${magic:0:4}" = 1f8b ]; then
  gzip -dc "$vmlinuz" >"$image"
elif [ "$(dd if="$vmlinuz" bs=1 skip=4 count=4 2>/dev/null)" = zimg ]; then
  # zboot header: payload offset (le32 at 8), size (le32 at 12), compression name at 24
  off=$(od -An -t u4 -j 8 -N 4 "$vmlinuz" | tr -d ' ')
  size=$(od -An -t u4 -j 12 -N 4 "$vmlinuz" | tr -d ' ')
  comp=$(dd if="$vmlinuz" bs=1 skip=24 count=8 2>/dev/null | tr -d '\0')
  case "$comp" in
    gzip) tail -c +"$((off + 1))" "$vmlinuz" | head -c "$size" | gzip -dc >"$image" ;;
    xz) tail -c +"$((off + 1))" "$vmlinuz" | head -c "$size" | xz -dc >"$image" ;;
    zstd|zstd22) tail -c +"$((off + 1))" "$vmlinuz" | head -c "$size" | zstd -dc >"$image" ;;
    *) die "EFI zboot kernel compressed with '$comp': not handled" ;;
  esac
else
  die "$(basename "$vmlinuz"): neither a raw arm64 Image, gzip nor EFI zboot (magic $magic)"
fi
[ "$(dd if="$image" bs=1 skip=56 count=4 2>/dev/null)" = $'ARM\x64' ] \
  || die "the unpacked kernel has no arm64 Image magic"

# --- initramfs -----------------------------------------------------------------------------
root=$work/root
mkdir -p "$root"/{bin,dev,proc,sys,etc,lib/modules}
cp "$work/busybox/bin/busybox" "$root/bin/busybox"
for a in $applets; do ln -s busybox "$root/bin/$a"; done

# module load order: dependencies first (from each .ko's modinfo `depends=`), each once
declare -A seen=()
order=()
module_file() { find "$moddir/kernel" -name "$1.ko*" -o -name "$(echo "$1" | tr _ -).ko*" | head -1; }
add_module() {
  local name=$1 file deps dep
  [ -n "${seen[$name]:-}" ] && return 0
  seen[$name]=1
  file=$(module_file "$name")
  [ -n "$file" ] || die "module $name not in $kver (built in? then drop it from \$modules)"
  case "$file" in
    *.xz) xz -dc "$file" >"$work/$name.ko" ;;
    *.zst) zstd -qdc "$file" >"$work/$name.ko" ;;
    *.gz) gzip -dc "$file" >"$work/$name.ko" ;;
    *) cp "$file" "$work/$name.ko" ;;
  esac
  deps=$(tr '\0' '\n' <"$work/$name.ko" | sed -n 's/^depends=//p' | head -1 | tr , ' ')
  for dep in $deps; do add_module "$dep"; done
  cp "$work/$name.ko" "$root/lib/modules/$name.ko"
  order+=("$name.ko")
}
for m in $modules; do add_module "$m"; done
printf '%s\n' "${order[@]}" >"$root/etc/probe-modules"

cat >"$root/init" <<'INIT'
#!/bin/sh
# PID 1 of the aarch64 boot probe (scripts/build-aarch64-probe.sh): load the virtio modules,
# report the arch and every virtio device with the driver bound to it, power off.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
while read -r m; do
  insmod "/lib/modules/$m" || echo "VCPROBE insmod $m failed"
done </etc/probe-modules
virtio=
for d in /sys/bus/virtio/devices/*; do
  [ -e "$d/device" ] || continue
  drv=none
  [ -e "$d/driver" ] && drv=$(basename "$(readlink "$d/driver")")
  virtio="$virtio${virtio:+,}$(cat "$d/device"):$drv"
done
blocks=$(ls /sys/block 2>/dev/null | tr '\n' ' ')
echo "VCPROBE arch=$(uname -m) kernel=$(uname -r) virtio=$virtio block=$blocks"
echo "VCPROBE END"
poweroff -f
INIT
chmod 0755 "$root/init"

# deterministic archive: fixed mtimes and owners, sorted names
find "$root" -exec touch -h -d @0 {} +
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet) \
  | gzip -9n >"$work/initramfs.cpio.gz"

# --- publish atomically-ish: files first, the stamp last ------------------------------------
mkdir -p "$out"
rm -f "$out/stamp"
mv "$image" "$out/Image"
mv "$work/initramfs.cpio.gz" "$out/initramfs.cpio.gz"
echo "$kver" >"$out/kernel_version"
echo "script=$script_hash suite=$suite" >"$out/stamp"
log "done: $out (kernel $kver, Image $(du -m "$out/Image" | cut -f1) MB, initramfs $(du -k "$out/initramfs.cpio.gz" | cut -f1) KB, modules: ${order[*]})"
