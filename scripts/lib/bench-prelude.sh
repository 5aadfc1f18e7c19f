# The shared start of the VM benches (sourced by scripts/bench-vm.sh and
# scripts/bench-engine-api.sh, which set ROOT, BLOB_ROOT, BENCH_NAME and BENCH_LINKS first).
# It builds the CLI, the two runtime plugins and the vm_bench probe; makes a throw-away
# $WORK with one link to the CLI per name in BENCH_LINKS under $WORK/bin and its own HOME and
# cache (no bench touches the user's state or snapshots); and on exit stops the memres VM of
# every tool the bench appended to $started, then removes $WORK.
cargo build -q -p vcontainer -p vcontainer-runtime-docker -p vcontainer-runtime-podman
cargo build -q -p vcontainer --example vm_bench
BIN_DIR=$ROOT/target/debug
PROBE=$BIN_DIR/examples/vm_bench

WORK=$(mktemp -d "/tmp/vcontainer-bench-$BENCH_NAME.XXXXXX")
started=""
cleanup() {
    for tool in $started; do
        "$WORK/bin/$tool" memres stop >/dev/null 2>&1 || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$WORK/bin" "$WORK/home"
for tool in $BENCH_LINKS; do
    ln -s "$BIN_DIR/vcontainer" "$WORK/bin/$tool"
done
export HOME="$WORK/home" XDG_CACHE_HOME="$WORK/home/.cache" VCONTAINER_PLUGIN_PATH="$BIN_DIR" VCONTAINER_BLOB_DIR="$BLOB_ROOT"

# the host may be shared: each figure is printed next to the load average
load() { cut -d' ' -f1-3 /proc/loadavg; }
