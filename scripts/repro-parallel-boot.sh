#!/bin/sh
# Boot N one-shot VMs at the same time, R rounds, and count the boots that fail.
#
# Reproduces "parallel boots under load never get the hybrid-vsock OK" (the host writes
# CONNECT 1024 to vhost-device-vsock's Unix socket and the answer never comes). Each VM gets
# its own state dir /tmp/vsock-<round>-<n>/state; a failed run keeps its dir (the command's
# out.txt/err.txt, state/console.log, state/vhost-device-vsock.log, state/qemu.log) for the
# post-mortem.
#
# Usage: scripts/repro-parallel-boot.sh [VMS] [ROUNDS]
# Env:   VCONTAINER (binary, default target/debug/vcontainer), RUNTIME (default podman),
#        REPRO_LOCK (default /tmp/vm-e2e.lock: held for the whole run so other VM tests
#        on this host do not boot at the same time), REPRO_ARGS (extra global options,
#        e.g. "-v"), REPRO_KEEP=1 keeps the state dirs of passing runs too.
set -eu

vms=${1:-3}
rounds=${2:-3}
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${VCONTAINER:-$repo/target/debug/vcontainer}
runtime=${RUNTIME:-podman}
lock=${REPRO_LOCK:-/tmp/vm-e2e.lock}

if [ ! -x "$bin" ]; then
    echo "no $bin (cargo build -p vcontainer)" >&2
    exit 2
fi
# a build tree's plugins are never taken from beside the binary (docs/security.md)
export VCONTAINER_PLUGIN_PATH="${VCONTAINER_PLUGIN_PATH:-$(dirname "$bin")}"

# Re-exec under the VM test lock unless we already hold it.
if [ -z "${REPRO_LOCKED:-}" ]; then
    REPRO_LOCKED=1 exec flock "$lock" "$0" "$@"
fi

fail=0
total=0
round=1
while [ "$round" -le "$rounds" ]; do
    pids=""
    n=1
    while [ "$n" -le "$vms" ]; do
        dir=/tmp/vsock-$round-$n
        rm -rf "$dir"
        mkdir -p "$dir"
        # shellcheck disable=SC2086 # REPRO_ARGS is a list of options
        (
            start=$(date +%s)
            if "$bin" --runtime "$runtime" --state-dir "$dir/state" ${REPRO_ARGS:-} --no-daemon images \
                >"$dir/out.txt" 2>"$dir/err.txt"; then
                echo "ok $(($(date +%s) - start))" >"$dir/result"
            else
                echo "FAIL($?) $(($(date +%s) - start))" >"$dir/result"
            fi
        ) &
        pids="$pids $!"
        n=$((n + 1))
    done
    # shellcheck disable=SC2086 # a list of pids
    wait $pids
    n=1
    line="round $round:"
    while [ "$n" -le "$vms" ]; do
        dir=/tmp/vsock-$round-$n
        res=$(cat "$dir/result" 2>/dev/null || echo "FAIL(?)")
        line="$line vm$n=${res}s"
        total=$((total + 1))
        case $res in
        ok*) [ -n "${REPRO_KEEP:-}" ] || rm -rf "$dir" ;;
        *)
            fail=$((fail + 1))
            echo "--- $dir/err.txt (tail)"
            tail -n 5 "$dir/err.txt" || true
            ;;
        esac
        n=$((n + 1))
    done
    echo "$line"
    round=$((round + 1))
done
echo "result: $((total - fail))/$total boots passed ($vms VMs in parallel, $rounds rounds)"
[ "$fail" -eq 0 ]
