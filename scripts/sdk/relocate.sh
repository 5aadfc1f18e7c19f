#!/bin/sh
# Points the SDK's executables at the SDK's own glibc loader (lib/vcontainer/host/ld-linux*),
# so they run on hosts whose glibc is older than the build host's, or that lack the
# libraries QEMU needs, without LD_LIBRARY_PATH. Installed as lib/vcontainer/host/relocate.sh;
# the installer runs it, and init-env.sh runs it again when the tree was moved or copied.
#
#   sh DIR/lib/vcontainer/host/relocate.sh [INTERP]
#
# A program's loader (PT_INTERP) must be an absolute path; everything else is relative
# ($ORIGIN RPATHs, set at build time). build-sdk.sh gave each executable a 1024-byte
# placeholder PT_INTERP and listed "offset size path" in RELOCATE: this overwrites that field
# in place (in a copy, renamed over the original, so a running VM's QEMU is not disturbed),
# updates those files' lines in MANIFEST and records the dir in relocated-to.
# INTERP (build-sdk.sh only) writes that string instead and forgets the record.
set -eu
unset CDPATH

here=$(cd -P -- "$(dirname -- "$0")" && pwd -P)
sdk=$(cd -P -- "$here/../../.." && pwd -P)
fail() {
    printf 'relocate.sh: %s\n' "$*" >&2
    exit 1
}
[ -f "$here/RELOCATE" ] || fail "$here/RELOCATE is missing: not an SDK tree"
interp=${1:-}
if [ -z "$interp" ]; then
    for l in "$here"/ld-linux*.so*; do [ -f "$l" ] && interp=$l; done
    [ -n "$interp" ] || fail "no bundled loader (ld-linux*.so*) in $here"
fi
[ -w "$sdk" ] || fail "$sdk is not writable: cannot point its executables at $interp"
n=${#interp}

paths=
while read -r off size path; do
    [ -n "$path" ] || continue
    [ "$n" -lt "$size" ] ||
        fail "the SDK's path is too long ($n bytes; at most $((size - 1))): $interp"
    f=$sdk/$path
    [ -f "$f" ] || fail "$f is missing"
    tmp=$f.relocating.$$
    cp -p -- "$f" "$tmp"
    if ! { printf '%s' "$interp" && dd if=/dev/zero bs=1 count="$((size - n))" 2>/dev/null; } |
        dd of="$tmp" bs=1 seek="$off" count="$size" conv=notrunc 2>/dev/null; then
        rm -f -- "$tmp"
        fail "cannot write $tmp"
    fi
    mv -f -- "$tmp" "$f"
    paths="$paths $path"
done <"$here/RELOCATE"

# the MANIFEST (sha256sum -c format) lists the patched files' new checksums, and those of
# the links to them (bin/vdkr -> vcontainer: sha256sum follows links)
if [ -f "$sdk/MANIFEST" ] && [ -n "$paths" ]; then
    while read -r _ path; do
        [ -L "$sdk/$path" ] && paths="$paths $path"
    done <"$sdk/MANIFEST"
    # shellcheck disable=SC2086 # $paths: the SDK's own file names, no spaces
    (cd "$sdk" && sha256sum -- $paths) >"$sdk/MANIFEST.new.$$"
    awk 'NR == FNR { sum[substr($0, 67)] = $0; next }
         { p = substr($0, 67); if (p in sum) print sum[p]; else print }' \
        "$sdk/MANIFEST.new.$$" "$sdk/MANIFEST" >"$sdk/MANIFEST.tmp.$$"
    mv -f -- "$sdk/MANIFEST.tmp.$$" "$sdk/MANIFEST"
    rm -f -- "$sdk/MANIFEST.new.$$"
fi
if [ -n "${1:-}" ]; then
    rm -f -- "$here/relocated-to"
else
    printf '%s\n' "$sdk" >"$here/relocated-to"
fi
