#!/bin/sh
# Batch-import bench (issue 12 item 8): wall time of the container-cross-install class's
# `vrunner.sh --batch-import` call for N small images (default N = 1, 3, 10), per runtime.
# Figures only, no thresholds. Each image is a busybox rootfs with its own /id file, built
# with `vcontainer image build --backend sloci` (no VM). The old tool took ~600 s for a set
# before its 9p rework and ~11 s after it (its commit 52ac90f1); we aim at one boot plus
# streaming speed. Runtimes: VCONTAINER_BENCH_RUNTIMES (default "podman docker"); counts:
# VCONTAINER_BENCH_BATCH_N (default "1 3 10"). Also run by `make bench`.
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUNTIMES=${VCONTAINER_BENCH_RUNTIMES:-"podman docker"}
COUNTS=${VCONTAINER_BENCH_BATCH_N:-"1 3 10"}
BLOB_ROOT=${VCONTAINER_BLOB_DIR:-$ROOT/build/blobs}
ARCH=x86_64

cargo build -q -p vcontainer -p vcontainer-runtime-docker -p vcontainer-runtime-podman \
    -p vcontainer-backend-sloci
BIN_DIR=$ROOT/target/debug
WORK=$(mktemp -d /tmp/vcontainer-bench-batch.XXXXXX)
trap 'rm -rf "$WORK"' EXIT INT TERM
mkdir -p "$WORK/bin" "$WORK/tmp" "$WORK/home"
ln -s "$BIN_DIR/vcontainer" "$WORK/bin/vrunner.sh"
export HOME="$WORK/home" TMPDIR="$WORK/tmp" VCONTAINER_PLUGIN_PATH="$BIN_DIR"

max=0
for n in $COUNTS; do [ "$n" -gt "$max" ] && max=$n; done
busybox=$(command -v busybox)
i=1
while [ "$i" -le "$max" ]; do
    r="$WORK/rootfs-$i"
    mkdir -p "$r/bin"
    cp "$busybox" "$r/bin/busybox"
    ln -s busybox "$r/bin/sh"
    echo "$i" > "$r/id"
    "$BIN_DIR/vcontainer" image build --backend sloci --rootfs "$r" \
        --output "$WORK/oci-$i" --tag latest --arch $ARCH >/dev/null 2>&1
    i=$((i + 1))
done

echo "batch import, $ARCH, $(nproc) cpus, load $(cut -d' ' -f1-3 /proc/loadavg)"
for rt in $RUNTIMES; do
    for n in $COUNTS; do
        set --
        i=1
        while [ "$i" -le "$n" ]; do
            set -- "$@" "$WORK/oci-$i:bench-$i:1"
            i=$((i + 1))
        done
        out="$WORK/$rt-$n.tar"
        start=$(date +%s.%N)
        status=0
        "$WORK/bin/vrunner.sh" --no-daemon --runtime "$rt" --arch $ARCH \
            --blob-dir "$BLOB_ROOT" --batch-import --timeout $((180 + 600 * n)) \
            --output "$out" -- "$@" >/dev/null 2>"$WORK/err" || status=$?
        end=$(date +%s.%N)
        if [ "$status" -ne 0 ]; then
            echo "$rt N=$n: failed (exit $status)"; cat "$WORK/err"; exit 1
        fi
        printf '%-6s N=%-3s %6.1f s  (%s)\n' "$rt" "$n" "$(echo "$end - $start" | bc)" \
            "$(du -h "$out" | cut -f1)"
        rm -f "$out"
    done
done
