#!/bin/sh
# VM bench: figures only (no thresholds), all measured in this one run on this machine.
#   baseline  the same bzImage + a tiny busybox initramfs whose /init powers off at once,
#             under the same QEMU flags as vcontainer (minus the vsock device): boot-to-init
#   cold      `<tool> --no-daemon images` from an empty state dir, and its ratio to baseline
#   restored  the same from a snapshot (docs/snapshot.md; the cold runs set
#             VCONTAINER_SNAPSHOT=0): the first run saves the snapshot, then the median of 3
#             restored runs and its ratio to baseline (both arches; a restore that fails
#             boots cold, so the bench still runs, and its -v reason is printed)
#   suspended the same from the state dir's suspended VM (docker: saved with its disk and
#             dockerd running after each command; the save is part of each run's time),
#             median of 3; the restored runs above set VCONTAINER_SUSPEND=0
#   memres    `memres start` cold, restored from the snapshot, and from a suspended VM (a
#             `memres stop` suspends it), as ratios to baseline
#   warm      with `memres start`: /bin/true through the agent vs the same in a guest loop
#             (scripts/../core/cli/examples/vm_bench.rs), and `<tool> images` wall time
#   stream    push/pull of a VCONTAINER_BENCH_STREAM_MIB (default 256) MiB file, guest /tmp
# Tools: VCONTAINER_BENCH_TOOLS (default "vpdmn vdkr"); arches: VCONTAINER_BENCH_ARCHES
# (default: each of x86_64 and aarch64 whose blobs exist). Also run by `make bench`.
# The host may be shared: the load average is printed next to the figures.
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
TOOLS=${VCONTAINER_BENCH_TOOLS:-"vpdmn vdkr"}
STREAM_MIB=${VCONTAINER_BENCH_STREAM_MIB:-256}
WARM_N=${VCONTAINER_BENCH_WARM_N:-30}
BLOB_ROOT=${VCONTAINER_BLOB_DIR:-$ROOT/build/blobs}
ARCHES=${VCONTAINER_BENCH_ARCHES:-}
if [ -z "$ARCHES" ]; then
    for a in x86_64 aarch64; do [ -d "$BLOB_ROOT/$a" ] && ARCHES="$ARCHES $a"; done
fi

BENCH_NAME=vm
BENCH_LINKS="vdkr vpdmn vdkr-x86_64 vpdmn-x86_64 vdkr-aarch64 vpdmn-aarch64"
. "$ROOT/scripts/lib/bench-prelude.sh"

now() { date +%s.%N; }
elapsed() { echo "$1 $2" | awk '{ printf "%.2f", $2 - $1 }'; }
ratio() { echo "$1 $2" | awk '{ printf "%.1f", $1 / $2 }'; }

# --- baseline: bare kernel boot-to-init --------------------------------------------------
# /init is busybox (static, of the guest's arch) powering off; -no-reboot turns that (or a
# panic) into QEMU's exit. The machine flags are vcontainer's own for that arch.
baseline() {
    arch=$1 kdir=$2
    case $arch in
        x86_64) busybox=$(command -v busybox) kernel=bzImage console=ttyS0
                machine="-machine q35,memory-backend=mem -cpu max" ;;
        aarch64) busybox=${CACHE_DIR:-$ROOT/build/cache}/test-busybox/arm64/busybox kernel=Image console=ttyAMA0
                 machine="-machine virt,memory-backend=mem -cpu max,pauth-impdef=on" ;;
    esac
    [ -x "$busybox" ] || { echo "no $arch busybox at $busybox (make test-fixtures)" >&2; exit 1; }
    ird="$WORK/tiny-initramfs"
    rm -rf "$ird" && mkdir -p "$ird/bin"
    cp "$busybox" "$ird/bin/busybox"
    printf '#!/bin/busybox sh\n/bin/busybox poweroff -f\n' >"$ird/init"
    chmod +x "$ird/init"
    (cd "$ird" && find . | cpio -o -H newc --quiet | gzip -1) >"$WORK/tiny.cpio.gz"
    t0=$(now)
    # shellcheck disable=SC2086 # $machine is a list of words
    "qemu-system-$arch" $machine -accel tcg -m 2048M -smp 2 \
        -object memory-backend-memfd,id=mem,size=2048M,share=on \
        -nodefaults -no-user-config -no-reboot -display none \
        -kernel "$kdir/$kernel" -initrd "$WORK/tiny.cpio.gz" \
        -append "console=$console quiet panic=-1" \
        -chardev file,id=console,path="$WORK/baseline-console.log" -serial chardev:console \
        -drive file="$kdir/rootfs.img",if=none,id=rootfs,format=raw,readonly=on \
        -device virtio-blk-pci,drive=rootfs,serial=rootfs \
        -netdev user,id=net0 -device virtio-net-pci,netdev=net0,romfile=
    elapsed "$t0" "$(now)"
}

echo "vcontainer VM bench ($(nproc) cpus, $(qemu-system-x86_64 --version | head -1))"
echo "load average at start: $(load)"
for ARCH in $ARCHES; do
for base_tool in $TOOLS; do
    case $base_tool in vdkr) runtime=docker ;; vpdmn) runtime=podman ;; *) echo "unknown tool $base_tool" >&2; exit 2 ;; esac
    tool=$base_tool-$ARCH
    kdir="$BLOB_ROOT/$ARCH/$runtime"
    state="$HOME/.$base_tool/$ARCH"
    echo
    echo "== $tool ($runtime on $ARCH) =="
    base=$(baseline "$ARCH" "$kdir")
    echo "baseline boot-to-init (bare $ARCH kernel, busybox /init poweroff): ${base}s  [load $(load)]"

    rm -rf "$state"
    t0=$(now)
    VCONTAINER_SNAPSHOT=0 "$WORK/bin/$tool" --no-daemon images >/dev/null
    cold=$(elapsed "$t0" "$(now)")
    echo "cold '$tool --no-daemon images' (empty state dir): ${cold}s = $(ratio "$cold" "$base")x baseline  [load $(load)]"
    if pgrep -f "qemu-system.*$state" >/dev/null; then echo "WARNING: QEMU left running after --no-daemon" >&2; fi

    t0=$(now)
    VCONTAINER_SUSPEND=0 VCONTAINER_SNAPSHOT=1 "$WORK/bin/$tool" -v --no-daemon images 2>"$WORK/first-snapshot.log" >/dev/null
    echo "first snapshot run (boot, save, restore, command): $(elapsed "$t0" "$(now)")s"
    if ! grep -q "restored from the snapshot" "$WORK/first-snapshot.log"; then
        echo "WARNING: no restore, the runs below are cold: $(grep -m1 'no snapshot' "$WORK/first-snapshot.log")" >&2
    fi
    runs=""
    for _ in 1 2 3; do
        t0=$(now)
        VCONTAINER_SUSPEND=0 VCONTAINER_SNAPSHOT=1 "$WORK/bin/$tool" --no-daemon images >/dev/null
        runs="$runs $(elapsed "$t0" "$(now)")"
    done
    restored=$(echo "$runs" | tr ' ' '\n' | grep . | sort -n | sed -n 2p)
    echo "restored '$tool --no-daemon images' (median of 3): ${restored}s = $(ratio "$restored" "$base")x baseline (goal <= 0.5x), $(ratio "$restored" "$cold")x cold  [load $(load)]"

    # suspended: the first run suspends (when the runtime has services to keep), the next
    # ones restore that and suspend again
    VCONTAINER_SNAPSHOT=1 "$WORK/bin/$tool" --no-daemon images >/dev/null 2>&1
    runs=""
    for _ in 1 2 3; do
        t0=$(now)
        VCONTAINER_SNAPSHOT=1 "$WORK/bin/$tool" -v --no-daemon images 2>"$WORK/suspended.log" >/dev/null
        runs="$runs $(elapsed "$t0" "$(now)")"
    done
    if grep -q "restored the suspended VM" "$WORK/suspended.log"; then
        susp=$(echo "$runs" | tr ' ' '\n' | grep . | sort -n | sed -n 2p)
        echo "suspended '$tool --no-daemon images' (median of 3, save included): ${susp}s = $(ratio "$susp" "$base")x baseline, $(ratio "$susp" "$cold")x cold  [load $(load)]"
        grep -o "restored the suspended VM .* in [0-9.]* s\|suspended the VM into .* in [0-9.]* s" "$WORK/suspended.log" | sed 's/ [^ ]*\/[^ ]* / /; s/ into in / in /; s/^/  last run: /'
    else
        echo "no suspended VM for $tool: $(grep -m1 -o 'not suspending the VM: .*' "$WORK/suspended.log")"
    fi

    t0=$(now)
    started="$started $tool"
    VCONTAINER_SNAPSHOT=0 "$WORK/bin/$tool" memres start >/dev/null
    mcold=$(elapsed "$t0" "$(now)")
    echo "memres start (boot + runtime services ready): ${mcold}s = $(ratio "$mcold" "$base")x baseline"
    "$WORK/bin/$tool" images >/dev/null # first command after start pays one-off costs
    best=""
    for _ in 1 2 3 4 5; do
        t0=$(now)
        "$WORK/bin/$tool" images >/dev/null
        t=$(elapsed "$t0" "$(now)")
        best="$best $t"
    done
    med=$(echo "$best" | tr ' ' '\n' | grep . | sort -n | sed -n 3p)
    echo "warm '$tool images' (memres, median of 5): ${med}s  [load $(load)]"
    "$PROBE" warm "$state" "$WARM_N" | sed "s/^/warm \/bin\/true x$WARM_N: /"
    "$PROBE" stream "$state" "$STREAM_MIB" | sed 's/^/stream: /'
    echo "load average: $(load)"
    "$WORK/bin/$tool" memres stop >/dev/null
    # the snapshot saved above fits the memres VM too (same key: docs/snapshot.md); the
    # cold memres VM wrote the disk since the last suspend, so that suspended VM is dropped
    t0=$(now)
    VCONTAINER_SNAPSHOT=1 "$WORK/bin/$tool" memres start >/dev/null
    mrest=$(elapsed "$t0" "$(now)")
    echo "restored memres start (restore + runtime services ready): ${mrest}s = $(ratio "$mrest" "$base")x baseline (goal < 1 s), $(ratio "$mrest" "$mcold")x cold  [load $(load)]"
    t0=$(now)
    "$WORK/bin/$tool" memres stop >/dev/null
    echo "memres stop (suspends when it may): $(elapsed "$t0" "$(now)")s"
    t0=$(now)
    VCONTAINER_SNAPSHOT=1 "$WORK/bin/$tool" -v memres start >/dev/null 2>"$WORK/memres-suspended.log"
    msusp=$(elapsed "$t0" "$(now)")
    if grep -q "restored the suspended VM" "$WORK/memres-suspended.log"; then
        echo "memres start from a suspended VM: ${msusp}s = $(ratio "$msusp" "$base")x baseline (goal < 1 s), $(ratio "$msusp" "$mcold")x cold  [load $(load)]"
    else
        echo "memres start (no suspended VM: $(grep -o 'not suspended: .*' "$state/vm.log" | tail -1)): ${msusp}s"
    fi
    "$WORK/bin/$tool" memres stop >/dev/null
    started=$(echo "$started" | sed "s/ $tool//")
done
done
