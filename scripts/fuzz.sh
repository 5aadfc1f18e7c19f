#!/usr/bin/env bash
# Hostile-input figures of issue 13 item 5 (`make fuzz`; not part of `make test`): runs each
# cargo-fuzz target in fuzz/ for a fixed time and prints its executions and findings (a
# finding is a crash, timeout or out-of-memory input libFuzzer saved under
# fuzz/artifacts/<target>/). Exits 1 when a target has a finding.
#
#   agent_push_tar    the guest agent's tar unpack behind PushTar (guest/agent/src/tarx.rs)
#   volume_sync_back  the host's copy-mode volume sync-back (core/cli/src/runner/volumes.rs)
#   oci_layout        vimport's OCI layout reader: index.json, manifests, archives
#   argv_plan         the runtime plugins' argv planner (plan_kit::plan, docker and podman)
#
# Each run starts from the committed seeds (fuzz/seeds/<target>/, made by
# fuzz/seeds/make-seeds.py) and the corpus of earlier runs (fuzz/corpus/<target>/, not
# committed). Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
#
# Environment:
#   FUZZ_SECONDS    seconds per target                                    [60]
#   FUZZ_TARGETS    targets to run                                        [all four]
#   FUZZ_SANITIZER  cargo fuzz -s: none, or address for ASan (slower)     [none]
#   FUZZ_TMPDIR     where the targets make their scratch dirs            [/dev/shm, else /tmp]
#   FUZZ_TOOLCHAIN  the nightly toolchain                                 [nightly]
set -uo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-60}
targets=${FUZZ_TARGETS:-agent_push_tar volume_sync_back oci_layout argv_plan}
sanitizer=${FUZZ_SANITIZER:-none}
toolchain=${FUZZ_TOOLCHAIN:-nightly}
if [ -z "${FUZZ_TMPDIR:-}" ]; then
    if [ -d /dev/shm ] && [ -w /dev/shm ]; then FUZZ_TMPDIR=/dev/shm; else FUZZ_TMPDIR=/tmp; fi
fi

for t in $targets; do
    cargo "+$toolchain" fuzz build -s "$sanitizer" "$t" || exit 2
done

declare -A execs findings
failed=0
for t in $targets; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    before=$(ls "fuzz/artifacts/$t" | wc -l)
    log="fuzz/artifacts/$t.log"
    echo "== $t: ${seconds}s"
    TMPDIR=$FUZZ_TMPDIR cargo "+$toolchain" fuzz run -s "$sanitizer" "$t" \
        "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$seconds" -timeout=30 -print_final_stats=1 >"$log" 2>&1
    rc=$?
    grep -E '^#[0-9]+[[:space:]]+(DONE|INITED)|^Done [0-9]+ runs|^==[0-9]+== ERROR|^thread .* panicked' "$log" | tail -4
    execs[$t]=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    if [ -z "${execs[$t]}" ]; then
        execs[$t]=$(sed -n 's/^#\([0-9]*\).*/\1/p' "$log" | tail -1)
    fi
    findings[$t]=$(( $(ls "fuzz/artifacts/$t" | wc -l) - before ))
    if [ "$rc" -ne 0 ] && [ "${findings[$t]}" -eq 0 ]; then
        findings[$t]=1 # stopped without saving an input: see the log
    fi
    if [ "${findings[$t]}" -ne 0 ]; then
        failed=1
        echo "   finding(s): fuzz/artifacts/$t/ (log: $log)"
    fi
done

echo
printf '%-18s %12s %9s\n' target execs findings
for t in $targets; do
    printf '%-18s %12s %9s\n' "$t" "${execs[$t]:-?}" "${findings[$t]}"
done
exit $failed
