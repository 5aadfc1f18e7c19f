#!/bin/sh
# Packs the vcontainer SDK (`make sdk`): a relocatable tree
#
#   bin/vcontainer + vdkr, vpdmn, vdkr-<arch>, vpdmn-<arch>, vrunner, vrunner.sh (relative symlinks)
#   lib/vcontainer/plugins/libvcontainer_*.so
#   share/vcontainer/blobs/<arch>/<runtime>/   (every complete set under build/blobs)
#   libexec/vhost-device-vsock                 (the host's, when installed)
#   init-env.sh  VERSION  MANIFEST (sha256sum -c format)
#
# as build/sdk/vcontainer-<host>.tar.gz and .tar.zst (deterministic: sorted names, fixed
# mtime and owner) and build/sdk/vcontainer-standalone-<host>.sh, the self-extracting
# installer whose payload is exactly one of them (SDK_PAYLOAD).
#
# Environment: CARGO (cargo), SDK_OUT (build/sdk), BLOB_DIR (build/blobs),
# SDK_SKIP_BUILD=1 (pack what target/release holds), SDK_ALLOW_NO_BLOBS=1 (pack without
# guest blobs: only useful to test the installer), SOURCE_DATE_EPOCH (the mtime in the
# tars; default the last commit's time), SDK_PAYLOAD=gz|zst (the installer's payload: gz
# extracts on any host, zst is smaller but needs zstd on the target host; default gz).
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
for tool in strip tar gzip zstd sha256sum cmp; do
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

# vhost-device-vsock for hosts without /dev/vhost-vsock (found relative to bin/ by the core)
if vhost=$(command -v vhost-device-vsock 2>/dev/null); then
    cp -L -- "$vhost" "$tree/libexec/vhost-device-vsock"
    strip --strip-all "$tree/libexec/vhost-device-vsock" 2>/dev/null || true
    chmod 0755 "$tree/libexec/vhost-device-vsock"
else
    msg "vhost-device-vsock not installed here: the SDK will rely on the target host's"
    rmdir -- "$tree/libexec"
fi

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
    if [ -x "$tree/libexec/vhost-device-vsock" ]; then
        echo "vhost-device-vsock: $("$tree/libexec/vhost-device-vsock" --version 2>/dev/null | head -n 1)"
    fi
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
