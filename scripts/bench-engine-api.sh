#!/bin/sh
# Engine API relay bench (issue 15 item 5): figures only (no thresholds), measured in this
# one run on this machine. With `<tool> vexpose`, N `GET /_ping` requests through the host
# socket (the relay: host socket -> agent connection over vsock -> the engine's socket) vs
# the same N against the engine's own socket inside the guest, both by the same perl client
# (scripts/lib/api-ping.pl; the guest's runs under the same emulation as the engine). Each
# mode prints the mean per request for both sides and the difference, which is what the
# relay adds:
#   conn  a new connection per request (what the docker CLI does for each command)
#   keep  one keep-alive connection (the framing alone, no connection set-up)
# The two sides alternate for VCONTAINER_BENCH_API_ROUNDS rounds (default 5) of
# VCONTAINER_BENCH_API_N requests (default 100) and the medians are printed, so a burst of
# load on a shared host moves one round, not one side. Tools: VCONTAINER_BENCH_TOOLS
# (default "vdkr vpdmn"). x86_64 only. Also run by `make bench`. The host may be shared: the
# load average is printed next to the figures.
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
TOOLS=${VCONTAINER_BENCH_TOOLS:-"vdkr vpdmn"}
N=${VCONTAINER_BENCH_API_N:-100}
ROUNDS=${VCONTAINER_BENCH_API_ROUNDS:-5}
BLOB_ROOT=${VCONTAINER_BLOB_DIR:-$ROOT/build/blobs}
ARCH=x86_64
PING="$ROOT/scripts/lib/api-ping.pl"

BENCH_NAME=api
BENCH_LINKS="vdkr vpdmn"
. "$ROOT/scripts/lib/bench-prelude.sh"

field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
diff_ms() { echo "$1 $2" | awk '{ printf "%+.3f", $1 - $2 }'; }
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

for tool in $TOOLS; do
    case $tool in vdkr) runtime=docker ;; vpdmn) runtime=podman ;; *) echo "unknown tool $tool" >&2; exit 2 ;; esac
    if [ ! -d "$BLOB_ROOT/$ARCH/$runtime" ]; then
        echo "== $tool: no blobs in $BLOB_ROOT/$ARCH/$runtime, skipped"
        continue
    fi
    state="$HOME/.$tool/$ARCH"
    echo "== $tool engine API relay: $ROUNDS rounds of $N x GET /_ping per side, medians"
    started="$started $tool"
    "$WORK/bin/$tool" --arch "$ARCH" vexpose >/dev/null 2>&1
    host_socket="$state/$runtime.sock"
    guest_socket=$(sed -n 's/.*"guest_socket": *"\([^"]*\)".*/\1/p' "$state/vm.json" | head -n1)
    [ -S "$host_socket" ] || { echo "no socket at $host_socket" >&2; exit 1; }
    [ -n "$guest_socket" ] || { echo "no guest socket in $state/vm.json" >&2; exit 1; }
    : >"$WORK/host" && : >"$WORK/guest"
    round=0
    while [ "$round" -lt "$ROUNDS" ]; do
        perl "$PING" "$host_socket" "$N" >>"$WORK/host"
        "$PROBE" exec "$state" perl -e "$(cat "$PING")" "$guest_socket" "$N" >>"$WORK/guest"
        round=$((round + 1))
    done
    for mode in conn keep; do
        h=$(while read -r l; do field "$l" "${mode}_ms"; done <"$WORK/host" | median)
        g=$(while read -r l; do field "$l" "${mode}_ms"; done <"$WORK/guest" | median)
        echo "$mode: host socket ${h} ms/request, guest socket ${g} ms/request, relay adds $(diff_ms "$h" "$g") ms  [load $(load)]"
    done
    "$WORK/bin/$tool" memres stop >/dev/null 2>&1
done
