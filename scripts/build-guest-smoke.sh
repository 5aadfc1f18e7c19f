#!/usr/bin/env bash
# Boots each runtime's guest image under QEMU with a probe /init instead of the agent
# (guest/image/probe/boot-probe.c) and checks what the agent relies on: the initramfs modules
# load in order, /dev/vda mounts as squashfs under a tmpfs overlay, AF_VSOCK listens, eth0
# exists, the rootfs has its module tree and e2fsck and no /boot; then, chrooted into the
# rootfs, that the runtime starts with the image's config (docker info: overlay2 + cgroupfs;
# podman info: overlay + cgroupfs + netavark). Prints boot timings.
#
# Reuses build/cache: the rootfs stage does not depend on /init, so only a probe initramfs is
# built (seconds) when scripts/build-guest.sh ran before. Never touches build/blobs.
#   usage: scripts/build-guest-smoke.sh [runtime...]     (default: docker podman)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
arch=${GUEST_ARCH:-x86_64}
[ "$arch" = x86_64 ] || { echo "build-guest-smoke.sh: only x86_64 is wired here" >&2; exit 2; }
cache_dir=${CACHE_DIR:-$repo/build/cache}
runtimes=${*:-docker podman}

work=$(mktemp -d "$repo/build/.smoke-XXXXXX")
vhd_pid=
cleanup() {
  [ -n "$vhd_pid" ] && kill "$vhd_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

gcc -static -O2 -Wall -o "$work/boot-probe" guest/image/probe/boot-probe.c

# one vhost-device-vsock per boot: it serves a single QEMU connection
have_vhd=0
command -v vhost-device-vsock >/dev/null 2>&1 && have_vhd=1
[ $have_vhd = 1 ] || echo "build-guest-smoke: vhost-device-vsock missing; vsock checked without a device" >&2
start_vsock() {
  vsock_opts=()
  machine=q35
  [ $have_vhd = 1 ] || return 0
  rm -f "$work/vhost-vsock.sock" "$work/vsock.sock"
  vhost-device-vsock --guest-cid 3 --socket "$work/vhost-vsock.sock" --uds-path "$work/vsock.sock" \
    >>"$work/vhost-device-vsock.log" 2>&1 &
  vhd_pid=$!
  for _ in $(seq 50); do [ -S "$work/vhost-vsock.sock" ] && break; sleep 0.1; done
  vsock_opts=(-object memory-backend-memfd,id=mem,size=1024M,share=on
              -chardev "socket,id=vsock0,path=$work/vhost-vsock.sock"
              -device vhost-user-vsock-pci,chardev=vsock0)
  machine=q35,memory-backend=mem
}
stop_vsock() {
  [ -n "$vhd_pid" ] && kill "$vhd_pid" 2>/dev/null && wait "$vhd_pid" 2>/dev/null || true
  vhd_pid=
}

status=0
for runtime in $runtimes; do
  GUEST_AGENT="$work/boot-probe" BLOB_DIR="$work/blobs" CACHE_DIR="$cache_dir" \
    GUEST_RUNTIMES="$runtime" scripts/build-guest.sh >"$work/build-$runtime.log" 2>&1 || {
      cat "$work/build-$runtime.log" >&2; exit 1; }
  dir=$work/blobs/$arch/$runtime
  start_vsock
  start=$(date +%s.%N)
  timeout 600 qemu-system-x86_64 -M "$machine" -accel tcg -m 1024 -smp 1 -nographic -no-reboot \
    -kernel "$dir/bzImage" -initrd "$dir/initramfs.cpio.gz" -append "console=ttyS0 panic=-1 probe.runtime=$runtime" \
    -drive "file=$dir/rootfs.img,if=virtio,format=raw,readonly=on" \
    -netdev user,id=net0 -device virtio-net-pci,netdev=net0 "${vsock_opts[@]}" \
    </dev/null >"$work/console-$runtime.log" 2>&1 || echo "QEMU exit status $?" >>"$work/console-$runtime.log"
  wall=$(echo "$(date +%s.%N) - $start" | bc)
  stop_vsock
  echo "== $runtime: rootfs $(du -m "$dir/rootfs.img" | cut -f1) MB, kernel $(du -m "$dir/bzImage" | cut -f1) MB, initramfs $(du -k "$dir/initramfs.cpio.gz" | cut -f1) KB; QEMU wall ${wall}s"
  grep -a '^PROBE' "$work/console-$runtime.log" | tr -d '\r' || true
  if ! grep -aq '^PROBE RESULT PASS' "$work/console-$runtime.log"; then
    echo "build-guest-smoke: $runtime FAILED; console:" >&2
    tail -40 "$work/console-$runtime.log" >&2
    tail -5 "$work/vhost-device-vsock.log" >&2 2>/dev/null || true
    status=1
  fi
done
exit $status
