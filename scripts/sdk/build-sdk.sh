#!/bin/sh
# Packs the vcontainer SDK (`make sdk`): a relocatable tree that runs on any x86_64 Linux with
# glibc 2.28 or newer, without QEMU or helpers installed there (docs/sdk.md says why and how)
#
#   bin/vcontainer + vdkr, vpdmn, vdkr-<arch>, vpdmn-<arch>, vrunner, vrunner.sh (relative symlinks)
#   lib/vcontainer/plugins/libvcontainer_*.so
#   lib/vcontainer/host/                       the build host's glibc loader and every shared
#                                              library the bundled executables need, relocate.sh
#                                              and RELOCATE (what relocate.sh patches)
#   libexec/qemu-system-{x86_64,aarch64}       the build host's QEMU (SDK_BUNDLE_QEMU=1), with
#   libexec/qemu-bundle/usr/...                its firmware and data files (QEMU looks there)
#   libexec/vhost-device-vsock, virtiofsd, mkfs.ext4
#   share/vcontainer/blobs/<arch>/<runtime>/   (every complete set under build/blobs)
#   init-env.sh  VERSION  MANIFEST (sha256sum -c format)
#
# as build/sdk/vcontainer-<host>.tar.gz and .tar.zst (deterministic: sorted names, fixed
# mtime and owner) and build/sdk/vcontainer-standalone-<host>.sh, the self-extracting
# installer whose payload is exactly one of them (SDK_PAYLOAD).
#
# Every bundled executable gets an RPATH relative to itself ($ORIGIN) and, in place of its
# PT_INTERP, a fixed-size placeholder that the installer (and init-env.sh, after a move)
# overwrites with the absolute path of the bundled loader: lib/vcontainer/host/relocate.sh.
#
# Environment: CARGO (cargo), SDK_OUT (build/sdk), BLOB_DIR (build/blobs),
# SDK_SKIP_BUILD=1 (pack what target/release holds), SDK_ALLOW_NO_BLOBS=1 (pack without
# guest blobs: only useful to test the installer), SOURCE_DATE_EPOCH (the mtime in the
# tars; default the last commit's time), SDK_PAYLOAD=gz|zst (the installer's payload: gz
# extracts on any host, zst is smaller but needs zstd on the target host; default gz),
# SDK_BUNDLE_QEMU=0 (leave QEMU out: for hosts that have their own; default 1),
# SDK_GUEST_ARCHES (the guest arches to pack, e.g. x86_64; default every one under BLOB_DIR).
set -eu
# a relative `cd` with CDPATH set prints the dir, which would end up in captured output
unset CDPATH

here=$(cd -P -- "$(dirname -- "$0")" && pwd -P)
root=$(cd -P -- "$here/../.." && pwd -P)
cd "$root"

CARGO=${CARGO:-cargo}
SDK_OUT=${SDK_OUT:-build/sdk}
BLOB_DIR=${BLOB_DIR:-build/blobs}
RELEASE_DIR=${RELEASE_DIR:-target/release}
PACKAGES="vcontainer vcontainer-runtime-docker vcontainer-runtime-podman vcontainer-backend-sloci vcontainer-backend-umoci"
TOOL_LINKS="vdkr vpdmn vdkr-x86_64 vdkr-aarch64 vpdmn-x86_64 vpdmn-aarch64 vrunner vrunner.sh"

host_arch=$(uname -m)
name=vcontainer-$host_arch
stage=$SDK_OUT/stage
tree=$stage/$name

msg() { printf 'sdk: %s\n' "$*" >&2; }
die() { msg "$*"; exit 1; }
SDK_BUNDLE_QEMU=${SDK_BUNDLE_QEMU:-1}
case $SDK_BUNDLE_QEMU in 0 | 1) ;; *) die "SDK_BUNDLE_QEMU must be 0 or 1, not $SDK_BUNDLE_QEMU" ;; esac
for tool in strip tar gzip zstd sha256sum cmp patchelf readelf ldd; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' is needed to pack the SDK"
done

if [ "${SDK_SKIP_BUILD:-0}" != 1 ]; then
    set --
    for p in $PACKAGES; do set -- "$@" -p "$p"; done
    msg "cargo build --release $*"
    "$CARGO" build --release "$@"
fi

rm -rf -- "$stage"
mkdir -p -- "$tree/bin" "$tree/lib/vcontainer/plugins" "$tree/share/vcontainer/blobs" "$tree/libexec"

# binaries, stripped: the debug info would carry build paths and triple the size
[ -x "$RELEASE_DIR/vcontainer" ] || die "no $RELEASE_DIR/vcontainer (build failed?)"
cp -- "$RELEASE_DIR/vcontainer" "$tree/bin/vcontainer"
strip --strip-all "$tree/bin/vcontainer"
for link in $TOOL_LINKS; do ln -s vcontainer "$tree/bin/$link"; done
plugins=0
for so in "$RELEASE_DIR"/libvcontainer_*.so; do
    [ -f "$so" ] || continue
    cp -- "$so" "$tree/lib/vcontainer/plugins/"
    # the loader needs the dynamic symbols only
    strip --strip-unneeded "$tree/lib/vcontainer/plugins/${so##*/}"
    plugins=$((plugins + 1))
done
[ "$plugins" -gt 0 ] || die "no plugins (libvcontainer_*.so) in $RELEASE_DIR"

# guest blobs: every complete <arch>/<runtime> set
arches=
runtimes=
if [ -d "$BLOB_DIR" ]; then
    for dir in "$BLOB_DIR"/*/*/; do
        dir=${dir%/}
        [ -d "$dir" ] || continue
        runtime=${dir##*/}
        arch_dir=${dir%/*}
        arch=${arch_dir##*/}
        case $arch in x86_64) kernel=bzImage ;; aarch64) kernel=Image ;; *) continue ;; esac
        case " ${SDK_GUEST_ARCHES:-$arch} " in *" $arch "*) ;; *) continue ;; esac
        complete=1
        for f in "$kernel" initramfs.cpio.gz rootfs.img; do
            [ -f "$dir/$f" ] || complete=0
        done
        if [ "$complete" = 0 ]; then
            msg "skipping incomplete blob set $dir"
            continue
        fi
        dest=$tree/share/vcontainer/blobs/$arch/$runtime
        mkdir -p -- "$dest"
        for f in "$kernel" initramfs.cpio.gz rootfs.img blobs.json; do
            [ -f "$dir/$f" ] || continue
            # runtimes of one arch usually share the kernel and initramfs: a hard link to
            # an identical copy is stored once in the tar and once on the user's disk
            twin=
            for other in "$tree/share/vcontainer/blobs/$arch"/*/"$f"; do
                [ -f "$other" ] && [ "$other" != "$dest/$f" ] && cmp -s -- "$other" "$dir/$f" &&
                    { twin=$other; break; }
            done
            if [ -n "$twin" ]; then
                ln -- "$twin" "$dest/$f"
            else
                cp -L -- "$dir/$f" "$dest/$f"
            fi
        done
        case " $arches " in *" $arch "*) ;; *) arches="$arches $arch" ;; esac
        case " $runtimes " in *" $runtime "*) ;; *) runtimes="$runtimes $runtime" ;; esac
    done
fi
arches=${arches# }
runtimes=${runtimes# }
if [ -z "$arches" ]; then
    [ "${SDK_ALLOW_NO_BLOBS:-0}" = 1 ] || die "no guest blobs under $BLOB_DIR (run 'make guest', or SDK_ALLOW_NO_BLOBS=1 for a blob-less test SDK)"
    msg "WARNING: packing without guest blobs (SDK_ALLOW_NO_BLOBS=1)"
fi

# --- the host side: QEMU, helpers, and the glibc they and vcontainer were linked against ---
hostlib=$tree/lib/vcontainer/host
mkdir -p -- "$hostlib"
# host_program NAME: the build host's NAME (PATH, then the sbin dirs)
host_program() {
    command -v "$1" 2>/dev/null && return 0
    for d in /usr/sbin /sbin; do
        [ -x "$d/$1" ] && { echo "$d/$1"; return 0; }
    done
    return 1
}
bundle_exe() { # bundle_exe PATH: into libexec/, stripped
    cp -L -- "$1" "$tree/libexec/${1##*/}"
    strip --strip-all "$tree/libexec/${1##*/}" 2>/dev/null || true
    chmod 0755 "$tree/libexec/${1##*/}"
}
if [ "$SDK_BUNDLE_QEMU" = 1 ]; then
    for arch in $arches; do
        qemu=$(host_program "qemu-system-$arch") ||
            die "qemu-system-$arch is not installed here (scripts/setup-host.sh), or pack with SDK_BUNDLE_QEMU=0"
        bundle_exe "$qemu"
    done
    # QEMU finds its firmware and data under <its dir>/qemu-bundle/<configured path> when
    # that dir exists (Debian's are absolute: /usr/share/qemu, /usr/share/seabios,
    # /usr/lib/ipxe/qemu); -h: Debian's /usr/share/qemu links into the other two
    for d in /usr/share/qemu /usr/share/seabios /usr/lib/ipxe/qemu; do
        [ -d "$d" ] || continue
        mkdir -p -- "$tree/libexec/qemu-bundle$d"
        tar -C "$d" -chf - . | tar -C "$tree/libexec/qemu-bundle$d" -xf -
    done
fi
# vhost-device-vsock (hybrid vsock without /dev/vhost-vsock), virtiofsd (live volumes),
# mkfs.ext4 (state disks): the host's, when installed
for helper in vhost-device-vsock virtiofsd mkfs.ext4; do
    if h=$(host_program "$helper"); then
        bundle_exe "$h"
    else
        msg "$helper not installed here: the SDK will rely on the target host's"
    fi
done

# the shared libraries (and the loader) every bundled ELF needs, as ldd resolves them here
bundle_libs() { # bundle_libs ELF
    ldd "$1" >"$stage/ldd.out" 2>&1 || die "ldd $1 failed: $(cat "$stage/ldd.out")"
    while IFS= read -r line; do
        line=${line#"${line%%[! 	]*}"}
        case $line in
            *"not found"*) die "$1: a library is missing here: $line" ;;
            *" => /"*) lib_name=${line%% =>*}; lib_path=${line#*=> }; lib_path=${lib_path%% (*} ;;
            /*) lib_path=${line%% (*}; lib_name=${lib_path##*/} ;;
            *) continue ;;
        esac
        [ -e "$hostlib/$lib_name" ] || cp -L -- "$lib_path" "$hostlib/$lib_name"
    done <"$stage/ldd.out"
    rm -f -- "$stage/ldd.out"
}
elves="bin/vcontainer"
for f in "$tree"/libexec/*; do [ -f "$f" ] && elves="$elves libexec/${f##*/}"; done
for so in "$tree"/lib/vcontainer/plugins/*.so; do elves="$elves lib/vcontainer/plugins/${so##*/}"; done
for e in $elves; do bundle_libs "$tree/$e"; done
loader=
for l in "$hostlib"/ld-linux*.so*; do [ -f "$l" ] && loader=${l##*/}; done
[ -n "$loader" ] || die "ldd named no dynamic loader (ld-linux*.so*)"
chmod 0755 "$hostlib/$loader"

# RPATH (not RUNPATH: an executable's RPATH also serves its libraries' own dependencies)
# relative to each ELF, and for executables a 1023-byte placeholder PT_INTERP that
# relocate.sh overwrites in place; RELOCATE lists "offset size path" of each
placeholder=$(printf '/vcontainer-sdk-not-relocated-source-init-env.sh-%01000d' 0 | cut -c1-1023)
: >"$hostlib/RELOCATE"
for e in $elves; do
    case $e in
        lib/vcontainer/plugins/*) rpath='$ORIGIN/../host' ;;
        *) rpath='$ORIGIN/../lib/vcontainer/host' ;;
    esac
    patchelf --force-rpath --set-rpath "$rpath" "$tree/$e"
    interp=$(readelf -lW "$tree/$e" | awk '$1 == "INTERP" { print $2 }')
    [ -n "$interp" ] || continue
    patchelf --set-interpreter "$placeholder" "$tree/$e"
    set -- $(readelf -lW "$tree/$e" | awk '$1 == "INTERP" { print $2, $5 }')
    [ "$#" = 2 ] && [ "$(($2))" = 1024 ] || die "$e: PT_INTERP is not the 1024-byte placeholder after patchelf"
    echo "$(($1)) $(($2)) $e" >>"$hostlib/RELOCATE"
done
cp -- "$here/relocate.sh" "$hostlib/relocate.sh"
chmod 0755 "$hostlib/relocate.sh"
# proof that the relocation works and that every executable starts with the bundled
# libraries; then back to the placeholder (relocate.sh writes the same bytes)
sh "$hostlib/relocate.sh" || die "relocate.sh failed on the staged tree"
"$tree/bin/vcontainer" --version >/dev/null || die "the relocated bin/vcontainer does not start"
for f in "$tree"/libexec/*; do
    [ -f "$f" ] || continue
    case ${f##*/} in mkfs.ext4) v=-V ;; *) v=--version ;; esac
    "$f" "$v" >/dev/null 2>&1 || die "the relocated ${f#"$tree"/} does not start ($f $v)"
done
versions=
for f in "$tree"/libexec/qemu-system-* "$tree"/libexec/vhost-device-vsock "$tree"/libexec/virtiofsd; do
    [ -f "$f" ] && versions="$versions
${f##*/}: $("$f" --version 2>/dev/null | head -n 1)"
done
sh "$hostlib/relocate.sh" "$placeholder" || die "relocate.sh could not restore the placeholder"
glibc=$(strings "$hostlib/libc.so.6" 2>/dev/null | sed -n 's/^GNU C Library.*version \([0-9][0-9.]*[0-9]\).*/\1/p' | head -n 1)

cp -- "$here/init-env.sh" "$tree/init-env.sh"
chmod 0644 "$tree/init-env.sh"

# version information, no build paths
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
cargo_version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n 1)
git_rev=$(git describe --always --dirty 2>/dev/null || echo unknown)
version="${cargo_version:-0.0.0}+git.$git_rev"
# json_field FILE KEY: a top-level string or number of blobs.json (no jq needed)
json_field() { tr -d '\n' <"$1" | sed -n "s/.*\"$2\": *\"*\([^\",}]*\).*/\1/p"; }
{
    echo "vcontainer SDK $version"
    echo "host: $host_arch"
    echo "architectures: ${arches:-none}"
    echo "runtimes: ${runtimes:-none}"
    echo "built: $(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || echo "$epoch")"
    for a in $arches; do
        for r in $runtimes; do
            m=$tree/share/vcontainer/blobs/$a/$r/blobs.json
            [ -f "$m" ] || continue
            echo "blobs $a/$r: kernel $(json_field "$m" kernel_version)," \
                "protocol $(json_field "$m" protocol_version), inputs $(json_field "$m" input_hash)"
        done
    done
    echo "glibc (bundled): ${glibc:-unknown}"
    [ -z "$versions" ] || printf '%s\n' "${versions#?}"
} >"$tree/VERSION"

# MANIFEST: what the installer removes before installing over an older SDK, and a
# `sha256sum -c MANIFEST` integrity check for users
(cd "$tree" && find . \( -type f -o -type l \) ! -name MANIFEST | sed 's|^\./||' | LC_ALL=C sort |
    while IFS= read -r f; do sha256sum -- "$f"; done) >"$stage/MANIFEST"
mv -- "$stage/MANIFEST" "$tree/MANIFEST"

find "$tree" -type d -exec chmod 0755 {} +
top=$(cd "$tree" && LC_ALL=C ls -A)
tarball() { # deterministic tar of the tree's entries (no top dir: extract with -C DIR)
    # shellcheck disable=SC2086 # $top: the tree's entry names, no spaces
    tar -C "$tree" --sort=name --format=gnu --mtime="@$epoch" --owner=0 --group=0 \
        --numeric-owner --mode='u+rwX,go+rX,go-w' -cf - $top
}
mkdir -p -- "$SDK_OUT"
# the blobs are compressed squashfs already: higher levels cost minutes and gain little
tarball | gzip -n -6 >"$SDK_OUT/$name.tar.gz.tmp"
tarball | zstd -q -9 -T2 -o "$SDK_OUT/$name.tar.zst.tmp" -f
mv -f -- "$SDK_OUT/$name.tar.gz.tmp" "$SDK_OUT/$name.tar.gz"
mv -f -- "$SDK_OUT/$name.tar.zst.tmp" "$SDK_OUT/$name.tar.zst"

# installer: the header with the payload's size, checksum and offset, then the payload;
# the offset is the header's own length, so substitute until it stops changing
payload_format=${SDK_PAYLOAD:-gz}
case $payload_format in gz | zst) ;; *) die "SDK_PAYLOAD must be gz or zst, not $payload_format" ;; esac
payload=$SDK_OUT/$name.tar.$payload_format
sum=$(sha256sum <"$payload" | cut -d' ' -f1)
psize=$(wc -c <"$payload" | tr -d ' ')
header=$SDK_OUT/installer-header.tmp
offset=0
while :; do
    sed -e "s|@SDK_VERSION@|$version|g" -e "s|@SDK_HOST_ARCH@|$host_arch|g" \
        -e "s|@SDK_ARCHES@|$arches|g" -e "s|@PAYLOAD_FORMAT@|$payload_format|g" -e "s|@PAYLOAD_SHA256@|$sum|g" \
        -e "s|@PAYLOAD_SIZE@|$psize|g" -e "s|@PAYLOAD_OFFSET@|$offset|g" \
        "$here/installer.sh.in" >"$header"
    len=$(wc -c <"$header" | tr -d ' ')
    [ "$len" = "$offset" ] && break
    offset=$len
done
installer=$SDK_OUT/vcontainer-standalone-$host_arch.sh
cat -- "$header" "$payload" >"$installer.tmp"
chmod 0755 "$installer.tmp"
mv -f -- "$installer.tmp" "$installer"
rm -f -- "$header"
rm -rf -- "$stage"

msg "SDK $version (guests: ${arches:-none}; runtimes: ${runtimes:-none})"
for f in "$installer" "$SDK_OUT/$name.tar.gz" "$SDK_OUT/$name.tar.zst"; do
    msg "  $(du -h -- "$f" | cut -f1)	$f"
done
