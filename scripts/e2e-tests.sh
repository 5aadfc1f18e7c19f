#!/usr/bin/env bash
# Runs the end-to-end suites of tests/ (real QEMU guests under TCG), one test at a time, as
# `make test` does. A test that fails is run once more on its own: if it passes then, it is
# reported as FLAKY with its first failure kept in the log, and the run still passes; if it
# fails again, the run fails. Why: a 2-core host booting TCG guests has timing trouble that
# one rerun rides out, and a rare one-off must not hide behind a red run of 50 VM tests, nor
# pass silently. Every retried test is named at the end, so flakiness stays visible.
#
# Environment: CARGO (default cargo); extra arguments are passed to the first run's test
# binaries (e.g. a test name filter).
set -uo pipefail
cd "$(dirname "$0")/.."
cargo=${CARGO:-cargo}
export RUST_BACKTRACE=0 VCONTAINER_E2E=1

log=$(mktemp)
trap 'rm -f "$log"' EXIT

"$cargo" test -p vcontainer-tests --no-fail-fast -- --test-threads=1 "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
[ "$status" -eq 0 ] && exit 0

# "<suite> <test>" for each failed test: the suite from cargo's "Running tests/<suite>.rs"
# line, the names from libtest's closing "failures:" list (4-space indented, one per line).
failed=$(awk '
  /^ *Running / { suite = "-" }
  /^ *Running tests\/[^ ]*\.rs/ { suite = $2; sub(/^tests\//, "", suite); sub(/\.rs$/, "", suite) }
  /^failures:$/ { listing = 1; next }
  listing && /^    [^ ]+$/ { print suite, $1; next }
  { listing = 0 }
' "$log" | sort -u)

if [ -z "$failed" ]; then
  echo "e2e: the run failed (exit $status) without a failed test to retry (a build error or a crashed test binary)" >&2
  exit "$status"
fi

flaky=()
while read -r suite name; do
  if [ "$suite" = "-" ]; then
    echo "e2e: $name (not in an end-to-end suite) failed; not retried" >&2
    exit 1
  fi
  echo
  echo "=== e2e: retrying $suite::$name once on its own"
  if "$cargo" test -p vcontainer-tests --test "$suite" -- --test-threads=1 --exact "$name"; then
    flaky+=("$suite::$name")
  else
    echo "e2e: $suite::$name failed twice" >&2
    exit 1
  fi
done <<< "$failed"

echo
for t in "${flaky[@]}"; do
  echo "FLAKY: $t failed once and passed on its retry (its first failure is above)"
done
exit 0
