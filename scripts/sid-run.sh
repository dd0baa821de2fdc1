#!/usr/bin/env bash
# sid-run.sh — run a command inside the Debian sid root (scripts/sid-root.sh).
#
#   scripts/sid-run.sh [--] CMD [ARGS...]
#   scripts/sid-run.sh .venvs/py3.14/bin/python -c 'import sys; print(sys.version)'
#
# The command runs chrooted into .sid-root/root, with
#   - the repository bind-mounted at the same absolute path, so paths under it
#     (e.g. .venvs/py3.14) are the same inside and out;
#   - the caller's working directory (it must be inside the repository, or
#     exist in the root);
#   - /proc, /dev (with /dev/pts and /dev/shm), /sys, and the host's current
#     /etc/resolv.conf and /etc/hosts; local directories named by
#     PIP_FIND_LINKS are bind-mounted read-only at their own paths;
#   - a clean environment: HOME=/root, a sid PATH, LANG=C.UTF-8, plus the
#     caller's PIP_*, PYTHON*, GOLOOP_*, PYTEST_*, COVERAGE_*, CI, TERM,
#     COLUMNS, LINES, NO_COLOR, FORCE_COLOR, TZ, SOURCE_DATE_EPOCH and proxy
#     variables.
#
# The mounts are made in a mount namespace of the command's own
# (unshare --mount --propagation private): they are invisible to the host and
# to other sid-run.sh commands, and the kernel removes them when the command
# (and whatever it left running) ends, however it ends (exit, crash, Ctrl-C,
# SIGTERM, SIGKILL).  Nothing needs unmounting, so concurrent runs are safe.
# The script execs its way down to the command (same PID), so signals reach
# the command directly and the exit status is the command's.  While it runs,
# the command holds .sid-root/lock shared, so that sid-root.sh does not
# rebuild the root under it.
#
# Exit status: the command's; 125 when sid-run.sh itself fails (no root,
# not root, mount failed), 126/127 from env when CMD cannot be run.
set -u
SELF="$(cd "$(dirname "$0")" && pwd -P)/$(basename "$0")"
ROOT="$(cd "$(dirname "$0")/.." && pwd -P)"
# shellcheck source=sid-paths.sh
. "$ROOT/scripts/sid-paths.sh"
LOCK_WAIT=1800   # seconds to wait for a running rebuild (sid-root.sh)

die() {
    echo "sid-run.sh: $*" >&2
    exit 125
}

usage() {
    echo "usage: scripts/sid-run.sh [--] CMD [ARGS...]   (runs CMD in the Debian sid root)" >&2
    exit 125
}

enter_namespace() {   # re-exec this script in a private mount namespace of its own
    [ "$(id -u)" = 0 ] || die "needs root (mount, chroot)"
    unshare --mount --propagation private true 2>/dev/null ||
        die "cannot create a mount namespace (unshare --mount): needs root with CAP_SYS_ADMIN"
    exec env _GOLOOP_SID_RUN_NS=1 unshare --mount --propagation private -- "$BASH" "$SELF" "$@"
}

lock_root() {   # hold the root's lock shared (fd 9, inherited by the command)
    # sid-root.sh, while preparing the root, holds the lock and runs us with
    # GOLOOP_SID_PREPARING=1: no stamp yet, and no lock to take.
    [ "${GOLOOP_SID_PREPARING:-}" = 1 ] && return 0
    [ -d "$SID_DIR" ] || die "no sid root in $SID_DIR: run scripts/sid-root.sh first"
    exec 9>>"$LOCK" || die "cannot open $LOCK"
    flock -s -w "$LOCK_WAIT" 9 || die "$LOCK still locked after ${LOCK_WAIT}s (a sid-root.sh rebuild?)"
    [ -f "$STAMP" ] || die "the sid root in $SID is not ready: run scripts/sid-root.sh"
}

refresh_etc_file() {   # the host's /etc/$1 into the root, when it differs
    local src="/etc/$1" dst="$SID/etc/$1"
    [ -f "$src" ] || return 0
    # A symlink in the root would be resolved against the host's / here.
    if [ -L "$dst" ] || ! cmp -s "$src" "$dst"; then
        # Atomic, for commands running meanwhile.
        if ! { cp -L "$src" "$dst.sid-run.$$" && mv -f "$dst.sid-run.$$" "$dst"; }; then
            die "cannot copy $src into the root"
        fi
    fi
}

mount_all() {   # in our own mount namespace: whatever we mount here is ours alone
    local d
    # The repository first, so that it does not carry the mounts below.
    if ! { mkdir -p "$SID$ROOT" && mount --rbind "$ROOT" "$SID$ROOT"; }; then
        die "cannot bind-mount $ROOT into the root"
    fi
    mount -t proc proc "$SID/proc" || die "cannot mount /proc in the root"
    mount --rbind /dev "$SID/dev" || die "cannot bind-mount /dev in the root"
    # multiprocessing needs a writable /dev/shm; a host without one gets a tmpfs.
    mountpoint -q "$SID/dev/shm" || mount -t tmpfs -o mode=1777,nosuid,nodev shm "$SID/dev/shm" ||
        die "cannot mount /dev/shm in the root"
    mount --rbind /sys "$SID/sys" 2>/dev/null || true   # nice to have, not needed
    for d in ${PIP_FIND_LINKS:-}; do   # pip's local wheel directories
        case "$d" in file://*) d="${d#file://}" ;; esac
        case "$d" in /*) ;; *) continue ;; esac
        [ -d "$d" ] || continue
        case "$d/" in "$ROOT"/*) continue ;; esac   # already there
        if mkdir -p "$SID$d"; then mount --bind -o ro "$d" "$SID$d" || true; fi
    done
    refresh_etc_file resolv.conf
    refresh_etc_file hosts
}

root_env() {   # fills ENV_ARGS with NAME=value for the command's environment
    local name
    ENV_ARGS=(HOME=/root PATH="$SID_PATH" LANG=C.UTF-8)
    for name in $(compgen -e); do
        case "$name" in
            PIP_* | PYTHON* | GOLOOP_* | PYTEST_* | COVERAGE_* | CI | TERM | COLUMNS | LINES | \
            NO_COLOR | FORCE_COLOR | TZ | SOURCE_DATE_EPOCH | \
            http_proxy | https_proxy | no_proxy | HTTP_PROXY | HTTPS_PROXY | NO_PROXY)
                ENV_ARGS+=("$name=${!name}") ;;
        esac
    done
}

main() {
    [ "${1:-}" = "--" ] && shift
    [ $# -gt 0 ] || usage
    [ "${_GOLOOP_SID_RUN_NS:-}" = 1 ] || enter_namespace "$@"
    lock_root
    [ -x "$SID/usr/bin/env" ] || die "no sid root in $SID: run scripts/sid-root.sh first"
    local cwd
    cwd="$(pwd -P)"
    case "$cwd/" in
        "$ROOT"/*) ;;
        *) [ -d "$SID$cwd" ] || die "the working directory $cwd is neither in $ROOT nor in the sid root" ;;
    esac
    mount_all
    root_env
    exec chroot "$SID" /usr/bin/env -i -C "$cwd" "${ENV_ARGS[@]}" "$@"
}

main "$@"
