#!/usr/bin/env bash
# Installs what vcontainer needs on a Debian bookworm build host: QEMU (from
# bookworm-backports, because the preinstalled qemu-utils 10.0 conflicts with
# bookworm's 7.2), the tools that build the guest blobs, qemu-user-static (the aarch64
# guest's rootfs), the test fixtures' tools, vhost-device-vsock (hybrid vsock where
# /dev/vhost-vsock is absent) and virtiofsd (live volumes of memres VMs).
# Idempotent: a second run only checks.
set -euo pipefail

need_root() { if [ "$(id -u)" -ne 0 ]; then echo "setup-host.sh: run as root (or with sudo)" >&2; exit 1; fi; }
need_root

export DEBIAN_FRONTEND=noninteractive
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")

if [ ! -f /etc/apt/sources.list.d/vcontainer-backports.sources ]; then
  cat > /etc/apt/sources.list.d/vcontainer-backports.sources <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: ${codename}-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi

pkgs_main=(mmdebstrap arch-test squashfs-tools e2fsprogs cpio zstd xz-utils busybox-static
           skopeo umoci docker-registry apache2-utils socat iproute2 jq zsh dash
           gcc libc6-dev openssl
           patchelf binutils  # the SDK's bundled executables (scripts/sdk/build-sdk.sh)
           libseccomp-dev libcap-ng-dev pkg-config   # these three: to build virtiofsd
           podman docker-compose)  # host clients of the `memres start --expose` tests
missing=()
for p in "${pkgs_main[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ! command -v qemu-system-x86_64 >/dev/null 2>&1 || ! command -v qemu-system-aarch64 >/dev/null 2>&1 \
   || [ ${#missing[@]} -gt 0 ]; then
  apt-get update -q
  [ ${#missing[@]} -gt 0 ] && apt-get install -y -q --no-install-recommends "${missing[@]}"
  if ! command -v qemu-system-x86_64 >/dev/null 2>&1 || ! command -v qemu-system-aarch64 >/dev/null 2>&1; then
    apt-get install -y -q --no-install-recommends -t "${codename}-backports" \
      qemu-system-x86 qemu-system-arm qemu-system-data ipxe-qemu
  fi
fi
# the docker client for the `vdkr memres start --expose` tests: any docker CLI will do (CI
# machines ship one); else Debian's docker.io, whose engine is kept from starting here
if ! command -v docker >/dev/null 2>&1; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
  apt-get install -y -q --no-install-recommends docker.io
  rm -f /usr/sbin/policy-rc.d
fi
# foreign-arch guests (aarch64 on x86_64): mmdebstrap runs the arm64 packages' maintainer
# scripts through qemu-user-static's binfmt handler (from backports, to match qemu-system)
if ! dpkg -s qemu-user-static >/dev/null 2>&1; then
  apt-get install -y -q --no-install-recommends -t "${codename}-backports" qemu-user-static
fi
# a container or a fresh CI machine may not have binfmt_misc mounted, nor the handlers loaded
# (systemd-binfmt does it at boot where systemd runs)
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
for handler in aarch64 arm; do
  if [ ! -e /proc/sys/fs/binfmt_misc/qemu-$handler ]; then
    if [ -x /lib/systemd/systemd-binfmt ]; then
      /lib/systemd/systemd-binfmt /usr/lib/binfmt.d/qemu-$handler.conf
    else
      cat /usr/lib/binfmt.d/qemu-$handler.conf > /proc/sys/fs/binfmt_misc/register
    fi
  fi
done

# the registry service is started by the tests themselves on loopback, never at boot
systemctl disable --now docker-registry >/dev/null 2>&1 || true

if ! command -v vhost-device-vsock >/dev/null 2>&1; then
  # pinned: the code speaks 0.3.0's command line (and works around its bugs, vm/vhost_gate.rs)
  cargo install --locked vhost-device-vsock --version 0.3.0
  ln -sf "$HOME/.cargo/bin/vhost-device-vsock" /usr/local/bin/vhost-device-vsock 2>/dev/null || true
fi
# virtiofsd shares the host with memres VMs (live `-v` volumes)
if ! command -v virtiofsd >/dev/null 2>&1; then
  cargo install --locked virtiofsd --version 1.14.0
  ln -sf "$HOME/.cargo/bin/virtiofsd" /usr/local/bin/virtiofsd 2>/dev/null || true
fi
echo "setup-host: ok ($(qemu-system-x86_64 --version | head -1); $(vhost-device-vsock --version 2>&1 | head -1); $(virtiofsd --version 2>&1 | head -1))"
