#!/usr/bin/env bash
# Fault figures of issue 13 item 5 (`make stress`; not part of `make test`): what a killed
# QEMU, a killed CLI, a full state disk and parallel commands cost, on one memres VM of the
# real guest. Prints one line per figure and exits 1 when a figure promised to be zero is not.
#
#   QEMU SIGKILLs  QEMU killed -9 during or just after a command (a vimport, or a vrun),
#                  at a random moment: the next command (`images`) must work on a fresh VM
#                  (next-command failures), the images must still be there (lost images),
#                  and no boot may find the state disk broken beyond e2fsck -p, nor e2fsck -fn
#                  after a clean stop at the end of the rounds (corrupt state disks).
#   CLI SIGKILLs   the same with the CLI killed -9 instead (the VM keeps running).
#   parallel       STRESS_PARALLEL `vrun bb:1 echo <token>` at once, each round: a command
#                  whose stdout is not exactly its token is an output lost.
#   disk full      a vimport bigger than a small state disk: it must fail naming the lack of
#                  space, and the VM and the image imported before must be intact.
#                  (`pull` into a full disk needs a registry holding a big image: not run.)
#   An image counts as lost when `images` does not list it or `vrun bb:1 echo` fails.
#
# Environment (defaults are the issue's figures; e.g. STRESS_QEMU_KILLS=3 for a short run):
#   STRESS_TOOL             vdkr (docker) or vpdmn (podman)          [vdkr]
#   STRESS_QEMU_KILLS       rounds of QEMU SIGKILL                   [20]
#   STRESS_CLI_KILLS        rounds of CLI SIGKILL                    [20]
#   STRESS_PARALLEL         commands per parallel round              [8]
#   STRESS_PARALLEL_ROUNDS  parallel rounds                          [20]
#   STRESS_DISK_FULL        1: run the disk-full check, 0: skip it    [1]
#   STRESS_BIN_DIR          the vcontainer binary and plugins        [target/debug]
#   VCONTAINER_BLOB_DIR     guest blobs                              [build/blobs]
#   STRESS_KEEP=1           keep the work dir (logs, state) for a look afterwards
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

tool=${STRESS_TOOL:-vdkr}
case $tool in
  vdkr) runtime=docker ;;
  vpdmn) runtime=podman ;;
  *) echo "stress: STRESS_TOOL must be vdkr or vpdmn" >&2; exit 2 ;;
esac
qemu_kills=${STRESS_QEMU_KILLS:-20}
cli_kills=${STRESS_CLI_KILLS:-20}
parallel=${STRESS_PARALLEL:-8}
parallel_rounds=${STRESS_PARALLEL_ROUNDS:-20}
disk_full=${STRESS_DISK_FULL:-1}
bin_dir=${STRESS_BIN_DIR:-$repo/target/debug}
blob_dir=${VCONTAINER_BLOB_DIR:-$repo/build/blobs}
[ -x "$bin_dir/vcontainer" ] || { echo "stress: no $bin_dir/vcontainer (make build-debug)" >&2; exit 2; }
[ -f "$blob_dir/x86_64/$runtime/rootfs.img" ] || { echo "stress: no guest blobs in $blob_dir (make guest)" >&2; exit 2; }
busybox=$(command -v busybox) || { echo "stress: busybox (busybox-static) is needed for the test image" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/vc-stress-XXXXXX")
chmod 700 "$work"
mkdir -p "$work/home" "$work/bin" "$work/logs"
ln -s "$bin_dir/vcontainer" "$work/bin/$tool"
export HOME=$work/home VCONTAINER_PLUGIN_PATH=$bin_dir VCONTAINER_BLOB_DIR=$blob_dir
unset VDKR_STATE_DIR VPDMN_STATE_DIR VDKR_ARCH VPDMN_ARCH
vc() { "$work/bin/$tool" "$@"; }
state=$HOME/.$tool/x86_64
full_state=$work/full-state

cleanup() {
  vc memres stop >/dev/null 2>&1
  vc --state-dir "$full_state" memres stop >/dev/null 2>&1
  if [ "${STRESS_KEEP:-0}" = 1 ]; then
    echo "stress: work dir kept: $work" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

log() { printf '[stress %s] %s\n' "$(date +%T)" "$*" >&2; }

# the test image: a busybox rootfs
rootfs=$work/rootfs
mkdir -p "$rootfs/bin" "$rootfs/tmp"
cp "$busybox" "$rootfs/bin/busybox"
for applet in sh echo sleep cat true; do ln -s busybox "$rootfs/bin/$applet"; done
tar -C "$rootfs" -cf "$work/bb.tar" bin tmp

qemu_pid() {
  sed -n 's/.*"qemu_pid": *\([0-9]*\).*/\1/p' "$1/vm.json" 2>/dev/null | head -n1
}

# a random delay in [0.2, 3.0] s
random_delay() { awk -v r="$RANDOM" 'BEGIN { printf "%.2f", 0.2 + (r % 281) / 100 }'; }

corrupt=0
check_boot_log() {
  # the agent says so when e2fsck -p could not repair the state disk at boot
  if grep -qs "could not fix" "$state/console.log"; then
    corrupt=$((corrupt + 1))
    cp "$state/console.log" "$work/logs/corrupt-$1.log"
    log "round $1: the state disk was found broken at boot"
  fi
}

# after a kill: the next command works and the image is still there
next_failures=0
lost=0
next_command() {
  local round=$1 out
  if ! out=$(vc images 2>"$work/logs/next-$round.err"); then
    next_failures=$((next_failures + 1))
    log "round $round: the next command failed: $(tail -n1 "$work/logs/next-$round.err")"
    return
  fi
  # listed, and still runs
  if ! printf '%s\n' "$out" | grep -Eq '(^|/)bb +1 ' ||
    [ "$(vc vrun bb:1 echo "alive-$round" 2>>"$work/logs/next-$round.err")" != "alive-$round" ]; then
    lost=$((lost + 1))
    log "round $round: image bb:1 lost or broken: $(tail -n1 "$work/logs/next-$round.err")"
  fi
}

log "memres VM for $tool ($runtime) in $state"
vc memres start >/dev/null 2>"$work/logs/start.err" || { cat "$work/logs/start.err" >&2; exit 1; }
vc vimport "$work/bb.tar" bb:1 >/dev/null 2>"$work/logs/import.err" || { cat "$work/logs/import.err" >&2; exit 1; }

kill_rounds() {
  local victim=$1 rounds=$2 i cmd pid delay target
  for i in $(seq 1 "$rounds"); do
    vc memres start >/dev/null 2>&1
    if [ $((i % 2)) = 1 ]; then
      cmd=(vimport "$work/bb.tar" "bb:r$i")
    else
      cmd=(vrun bb:1 sleep 2)
    fi
    vc "${cmd[@]}" >/dev/null 2>"$work/logs/$victim-$i.err" &
    pid=$!
    delay=$(random_delay)
    sleep "$delay"
    if [ "$victim" = qemu ]; then
      target=$(qemu_pid "$state")
    else
      target=$pid
    fi
    [ -n "$target" ] && kill -KILL "$target" 2>/dev/null
    wait "$pid" 2>/dev/null
    log "$victim round $i: ${cmd[0]} killed after ${delay}s"
    next_command "$victim-$i"
    # only a killed QEMU makes the next command boot (and check the disk)
    [ "$victim" = qemu ] && check_boot_log "$victim-$i"
  done
}

# the state disk after a clean stop: e2fsck -fn finds nothing to fix
fsck_after() {
  vc memres stop >/dev/null 2>&1
  if ! e2fsck -fn "$state/$runtime-state.img" >"$work/logs/fsck-$1.out" 2>&1; then
    corrupt=$((corrupt + 1))
    log "e2fsck -fn after the $1 rounds: $(tail -n3 "$work/logs/fsck-$1.out")"
  fi
}

kill_rounds qemu "$qemu_kills"
fsck_after qemu
qemu_next=$next_failures qemu_lost=$lost qemu_corrupt=$corrupt
next_failures=0 lost=0 corrupt=0
kill_rounds cli "$cli_kills"
fsck_after cli
cli_next=$next_failures cli_lost=$lost cli_corrupt=$corrupt

# parallel commands on the one VM
vc memres start >/dev/null 2>&1
outputs_lost=0
for r in $(seq 1 "$parallel_rounds"); do
  for i in $(seq 1 "$parallel"); do
    vc vrun bb:1 echo "out-$r-$i" >"$work/logs/par-$r-$i.out" 2>"$work/logs/par-$r-$i.err" &
  done
  wait
  for i in $(seq 1 "$parallel"); do
    if [ "$(cat "$work/logs/par-$r-$i.out")" != "out-$r-$i" ]; then
      outputs_lost=$((outputs_lost + 1))
      log "parallel round $r command $i: $(cat "$work/logs/par-$r-$i.out") / $(tail -n1 "$work/logs/par-$r-$i.err")"
    fi
  done
done
log "parallel: $parallel_rounds rounds of $parallel"
vc memres stop >/dev/null 2>&1

# a full state disk: 200 MiB, and an image of 300 MiB of incompressible data
full_line="disk full: skipped (STRESS_DISK_FULL=0)"
full_bad=0
if [ "$disk_full" = 1 ]; then
  mkdir -p "$full_state"
  chmod 700 "$full_state"
  truncate -s 200M "$full_state/$runtime-state.img"
  mkfs.ext4 -q -F -L vcstate "$full_state/$runtime-state.img"
  big=$work/big-rootfs
  mkdir -p "$big"
  cp -a "$rootfs/." "$big/"
  head -c 300M /dev/urandom >"$big/blob"
  tar -C "$big" -cf "$work/big.tar" bin tmp blob
  rm -rf "$big"
  vf() { vc --state-dir "$full_state" "$@"; }
  vf memres start >/dev/null 2>&1
  vf vimport "$work/bb.tar" bb:1 >/dev/null 2>&1
  vf vimport "$work/big.tar" big:1 >/dev/null 2>"$work/logs/full.err"
  full_rc=$?
  clear=no vm=no images=no
  if [ "$full_rc" != 0 ] && grep -qi "no space left\|not enough space\|disk full\|no space" "$work/logs/full.err"; then
    clear=yes
  fi
  vf memres status 2>/dev/null | grep -q running && vm=yes
  vf images 2>/dev/null | grep -Eq '(^|/)bb +1 ' && images=yes
  vf memres stop >/dev/null 2>&1
  e2fsck -fn "$full_state/$runtime-state.img" >/dev/null 2>&1 || images="$images (e2fsck: errors)"
  full_line="disk full (vimport of 300 MiB into 200 MiB): exit $full_rc, clear error $clear, VM intact $vm, earlier image intact $images"
  [ "$clear $vm $images" = "yes yes yes" ] || full_bad=1
  [ "$clear" = yes ] || log "disk full error was: $(tail -n3 "$work/logs/full.err")"
fi

echo "stress ($tool, $runtime guest, $(nproc) cpus)"
echo "QEMU SIGKILLs $qemu_kills: next-command failures $qemu_next, lost images $qemu_lost, corrupt state disks $qemu_corrupt"
echo "CLI SIGKILLs $cli_kills: next-command failures $cli_next, lost images $cli_lost, corrupt state disks $cli_corrupt"
echo "parallel $parallel x $parallel_rounds rounds: outputs lost $outputs_lost"
echo "$full_line"
total=$((qemu_next + qemu_lost + qemu_corrupt + cli_next + cli_lost + cli_corrupt + outputs_lost + full_bad))
[ "$total" = 0 ]
