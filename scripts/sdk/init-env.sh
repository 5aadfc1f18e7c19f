# vcontainer SDK environment: source it, do not run it.
#
#   . /path/to/vcontainer-sdk/init-env.sh              (bash, zsh, dash, busybox sh)
#   . /path/to/vcontainer-sdk/init-env.sh /path/to/vcontainer-sdk   (explicit dir, bash/zsh)
#
# It puts the SDK's bin/ first on PATH (once, however often it is sourced), and when the
# tree was moved or copied since it was installed it first points the bundled executables at
# the bundled glibc loader in their new place (lib/vcontainer/host/relocate.sh: a program's
# loader path is the one absolute path an ELF file holds; see docs/sdk.md). Nothing else is
# needed: vcontainer finds its plugins (../lib/vcontainer/plugins), guest blobs
# (../share/vcontainer/blobs) and helpers (../libexec: QEMU, vhost-device-vsock, virtiofsd)
# relative to its own executable. No LD_LIBRARY_PATH: the executables carry relative RPATHs.
#
# Finding our own directory portably is the hard part, because POSIX `.` does not tell the
# sourced file its path: bash has $BASH_SOURCE, zsh has %x; dash and busybox sh keep the
# file open while reading it, so on Linux /proc/$$/fd shows it.
# vcontainer-sdk-init-env (marker: lets the /proc scan recognise this file)

__vcsdk_dir=
__vcsdk_is_sdk() {
    [ -n "$1" ] && [ -x "$1/bin/vcontainer" ] && [ -f "$1/init-env.sh" ]
}
__vcsdk_from_file() {
    # the directory of the file $1 after resolving symlinks (a linked init-env.sh still
    # means the SDK it points into)
    set -- "$(readlink -f "$1" 2>/dev/null || printf '%s' "$1")"
    case $1 in
        */*) (CDPATH='' cd -P -- "${1%/*}" 2>/dev/null && pwd -P) ;;
        *) pwd -P ;;
    esac
}

# 1. an explicit dir (bash and zsh pass extra `.` arguments as $1; dash does not)
if [ $# -ge 1 ] && __vcsdk_is_sdk "$1"; then
    __vcsdk_dir=$(CDPATH='' cd -P -- "$1" && pwd -P)
fi
# 2. the shell says which file it is reading
if [ -z "$__vcsdk_dir" ] && [ -n "${BASH_VERSION:-}" ]; then
    # shellcheck disable=SC2128,SC3028 # bash only: $BASH_SOURCE is ${BASH_SOURCE[0]}
    __vcsdk_dir=$(__vcsdk_from_file "$BASH_SOURCE")
fi
if [ -z "$__vcsdk_dir" ] && [ -n "${ZSH_VERSION:-}" ]; then
    eval '__vcsdk_dir=$(__vcsdk_from_file "${(%):-%x}")'
fi
# 3. dash, busybox sh: the open file descriptor of the file being sourced
if [ -z "$__vcsdk_dir" ] || ! __vcsdk_is_sdk "$__vcsdk_dir"; then
    __vcsdk_dir=
    for __vcsdk_fd in "/proc/$$/fd"/*; do
        __vcsdk_f=$(readlink "$__vcsdk_fd" 2>/dev/null) || continue
        case $__vcsdk_f in
            */init-env.sh) ;;
            *) continue ;;
        esac
        if grep -q '^# vcontainer-sdk-init-env' -- "$__vcsdk_f" 2>/dev/null; then
            __vcsdk_dir=$(__vcsdk_from_file "$__vcsdk_f")
            __vcsdk_is_sdk "$__vcsdk_dir" && break
            __vcsdk_dir=
        fi
    done
fi
# 4. ksh and friends set $0 to the sourced file
if [ -z "$__vcsdk_dir" ]; then
    case $0 in
        */init-env.sh) __vcsdk_dir=$(__vcsdk_from_file "$0") ;;
    esac
fi

__vcsdk_rc=1
# shellcheck disable=SC3028 # bash only
if [ -n "${BASH_VERSION:-}" ] && [ "${BASH_SOURCE:-}" = "$0" ]; then
    echo "init-env.sh: it was run, not sourced, so it cannot change your shell's PATH;" \
        "use: . $0" >&2
elif __vcsdk_is_sdk "$__vcsdk_dir" && [ -f "$__vcsdk_dir/lib/vcontainer/host/relocate.sh" ] &&
    [ "$(cat "$__vcsdk_dir/lib/vcontainer/host/relocated-to" 2>/dev/null)" != "$__vcsdk_dir" ] &&
    ! sh "$__vcsdk_dir/lib/vcontainer/host/relocate.sh"; then
    echo "init-env.sh: the SDK in $__vcsdk_dir was moved and its executables could not be" \
        "pointed at their new place (see above); PATH is unchanged" >&2
elif __vcsdk_is_sdk "$__vcsdk_dir"; then
    case ":${PATH:-}:" in
        *":$__vcsdk_dir/bin:"*) ;;
        *) PATH="$__vcsdk_dir/bin${PATH:+:$PATH}"; export PATH ;;
    esac
    __vcsdk_rc=0
else
    echo "init-env.sh: cannot tell where the vcontainer SDK is; source it by path, or name" \
        "the dir: . /path/to/vcontainer-sdk/init-env.sh /path/to/vcontainer-sdk" >&2
fi
unset __vcsdk_dir __vcsdk_fd __vcsdk_f
unset -f __vcsdk_is_sdk __vcsdk_from_file 2>/dev/null
# eval expands the status before the unset, so no variable of ours is left behind;
# `return` ends a sourced file, `(exit n)` sets the status if we were run instead
eval "unset __vcsdk_rc; return $__vcsdk_rc 2>/dev/null || (exit $__vcsdk_rc)"
