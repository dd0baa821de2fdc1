#!/usr/bin/env bash
# sid-root.sh — prepare (or reuse) the Debian sid root that provides CPython
# 3.14 and 3.15 for scripts/test.sh.
#
# The root lives in .sid-root/ at the top of the repository (git-ignored):
#   .sid-root/root          the chroot (debootstrap --variant=minbase sid), ~1.3 GB
#   .sid-root/ready         stamp, written last by a successful preparation
#   .sid-root/prepare.log   log of the last preparation
#   .sid-root/lock          flock: runs (scripts/sid-run.sh) hold it shared,
#                           a (re)build holds it exclusively
# In the root: python3.14/3.15 (-dev, -venv, their test suites, -dbg debug
# builds), gcc, make, openssl.  Commands run in it through scripts/sid-run.sh.
#
# A healthy root (stamp for this package list present; python3.14, python3.15,
# python3.14-dbg, python3.15-dbg and gcc all run) is reused at once and
# silently.  Otherwise it is deleted (after unmounting anything under it) and
# built again from scratch, 2-3 minutes with a fast network; a one-line
# notice goes to stderr, everything else to the log, whose tail is printed on
# failure.  Needs root; installs debootstrap with apt-get when it is missing.
# The Debian mirror is the host's (its apt sources), or GOLOOP_SID_MIRROR.
#
# Remove the root with:  rm -rf .sid-root   (no sid-run.sh may be running)
#
# Exit status: 0 when the root is ready, 1 (with a message) when it is not.
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd -P)"
# shellcheck source=sid-paths.sh
. "$ROOT/scripts/sid-paths.sh"
LOG="$SID_DIR/prepare.log"
PACKAGES=(python3.14-dev python3.14-venv libpython3.14-testsuite python3.14-dbg
          python3.15-dev python3.15-venv libpython3.15-testsuite python3.15-dbg
          gcc libc6-dev make openssl)
# The stamp records what was installed: change PACKAGES (or this format) and
# every existing root is rebuilt.
STAMP_ID="goloop-sid-root v2: ${PACKAGES[*]}"
LOCK_WAIT=1800   # seconds a rebuild waits for running sid-run.sh commands

die() {
    echo "sid-root.sh: $*" >&2
    exit 1
}

fail_with_log() {   # the preparation failed: show why, say so, exit 1
    echo "sid-root.sh: $*" >&2
    if [ -s "$LOG" ]; then
        echo "----- last lines of $LOG -----" >&2
        tail -n 40 "$LOG" >&2
        echo "-----" >&2
    fi
    rm -f "$STAMP"
    exit 1
}

log() {   # a step heading in the log
    echo "=== $(date '+%F %T') $*" >>"$LOG"
}

tools_run() {   # the interpreters and gcc run in the root (prints their versions)
    chroot "$SID" /usr/bin/env -i PATH="$SID_PATH" LANG=C.UTF-8 /bin/sh -c \
        'python3.14 -V && python3.15 -V && python3.14-dbg -V && python3.15-dbg -V && gcc --version | head -n 1'
}

healthy() {   # the stamp is this script's and the tools run
    [ -f "$STAMP" ] && [ "$(head -n 1 "$STAMP")" = "$STAMP_ID" ] && tools_run >/dev/null 2>&1
}

mounts_under() {   # mount points at or under $1 in this mount namespace, deepest first
    local mp
    # Field 5 of mountinfo is the mount point, with octal escapes (\040 = space).
    while read -r _ _ _ _ mp _; do
        mp="$(printf '%b' "$mp")"
        case "$mp" in "$1" | "$1"/*) echo "$mp" ;; esac
    done </proc/self/mountinfo | sort -r
}

remove_root() {   # unmount everything under $SID, then delete it
    local mp
    mounts_under "$SID" | while IFS= read -r mp; do
        umount "$mp" 2>/dev/null || umount -l "$mp" || true
    done
    if [ -n "$(mounts_under "$SID")" ]; then
        die "still mounted under $SID, not deleting it:
$(mounts_under "$SID")"
    fi
    rm -rf --one-file-system "$SID" || die "could not delete $SID"
}

host_mirror() {   # the host's Debian archive URL (deb822 or one-line sources)
    local f
    if [ -n "${GOLOOP_SID_MIRROR:-}" ]; then echo "$GOLOOP_SID_MIRROR"; return; fi
    {
        for f in /etc/apt/sources.list.d/*.sources; do
            [ -r "$f" ] || continue
            # One stanza per paragraph; an enabled "Types: deb" stanza's URIs.
            awk 'BEGIN { RS = "" }
                 { types = ""; uris = ""; enabled = "yes"
                   n = split($0, line, "\n")
                   for (i = 1; i <= n; i++) {
                       l = line[i]
                       if (l ~ /^[ \t]*#/) continue
                       key = tolower(l); sub(/:.*/, "", key)
                       sub(/^[^:]*:[ \t]*/, "", l)
                       if (key == "types") types = l
                       else if (key == "uris") uris = l
                       else if (key == "enabled") enabled = tolower(l)
                   }
                   if (enabled ~ /^no/ || types !~ /(^|[ \t])deb([ \t]|$)/) next
                   m = split(uris, u, /[ \t]+/)
                   for (j = 1; j <= m; j++) if (u[j] != "") print u[j] }' "$f"
        done
        for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
            [ -r "$f" ] || continue
            # deb [options] URL suite components
            sed -nE 's/^[ \t]*deb[ \t]+(\[[^]]*\][ \t]+)?([^ \t]+).*/\2/p' "$f"
        done
    } | sed 's:/*$::' | grep -E '^(https?|ftp)://.*/debian$' | head -n 1 | grep . ||
        echo "http://deb.debian.org/debian"
}

ensure_debootstrap() {
    command -v debootstrap >/dev/null 2>&1 && return 0
    log "installing debootstrap on the host"
    { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y debootstrap; } >>"$LOG" 2>&1 ||
        fail_with_log "could not install debootstrap (apt-get install -y debootstrap)"
    command -v debootstrap >/dev/null 2>&1 || fail_with_log "debootstrap still missing after apt-get install"
}

in_root() {   # a command in the root being prepared (no stamp yet, lock already held)
    GOLOOP_SID_PREPARING=1 "$ROOT/scripts/sid-run.sh" "$@" >>"$LOG" 2>&1
}

copy_host_file() {   # $1 from the host to the same path in the root, when it is a file
    case "$1" in /*) ;; *) return 0 ;; esac
    [ -f "$1" ] || return 0
    mkdir -p "$SID$(dirname "$1")" && cp -L --remove-destination "$1" "$SID$1"
}

build_root() {
    local mirror f
    : >"$LOG"
    log "removing the old root (if any)"
    rm -f "$STAMP"
    remove_root
    ensure_debootstrap
    mirror="$(host_mirror)"
    log "debootstrap --variant=minbase sid $SID $mirror"
    debootstrap --variant=minbase sid "$SID" "$mirror" >>"$LOG" 2>&1 ||
        fail_with_log "debootstrap of Debian sid from $mirror failed"
    # Sid's Release files can look stale against a host clock or snapshot
    # mirror; and what is installed later (ensure-cross-tools.sh under CI)
    # should not pull in recommends such as systemd (~0.9 GB more).
    printf '%s\n' 'Acquire::Check-Valid-Until "false";' 'APT::Install-Recommends "false";' \
        >"$SID/etc/apt/apt.conf.d/99goloop"
    # Packages must not start services in the root (and on the host's behalf).
    printf '#!/bin/sh\nexit 101\n' >"$SID/usr/sbin/policy-rc.d" && chmod +x "$SID/usr/sbin/policy-rc.d"
    mkdir -p "$SID$ROOT"   # where sid-run.sh mounts the repository
    log "apt-get install ${PACKAGES[*]}"
    in_root apt-get update || fail_with_log "apt-get update in the sid root failed"
    in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${PACKAGES[@]}" ||
        fail_with_log "apt-get install in the sid root failed"
    in_root apt-get clean || true
    # After the packages: sid's ca-certificates writes its own bundle, with
    # which pip fails the host network's certificate checks.
    log "copying the host's pip configuration and CA bundle"
    for f in /etc/pip.conf /etc/ssl/certs/ca-certificates.crt "${PIP_CERT:-}"; do
        [ -n "$f" ] || continue
        copy_host_file "$f" || fail_with_log "could not copy $f into the root"
    done
    tools_run >>"$LOG" 2>&1 || fail_with_log "the new sid root does not run python3.14/3.15/-dbg or gcc"
    { echo "$STAMP_ID"; echo "prepared $(date '+%F %T') from $mirror"; } >"$STAMP"
    log "ready"
}

main() {
    [ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, mount); the sid root is not prepared"
    mkdir -p "$SID_DIR" || die "cannot create $SID_DIR"
    exec 9>>"$LOCK" || die "cannot open $LOCK"
    # Shared lock for the check: cheap, and never waits for running commands.
    flock -s 9 || die "cannot lock $LOCK"
    healthy && exit 0
    # A rebuild needs the root to itself: wait for sid-run.sh commands to end.
    flock -u 9
    if ! flock -x -w "$LOCK_WAIT" 9; then
        die "the sid root needs a rebuild, but commands in it (scripts/sid-run.sh) still hold $LOCK after ${LOCK_WAIT}s"
    fi
    healthy && exit 0   # another sid-root.sh rebuilt it meanwhile
    echo "sid-root.sh: preparing the Debian sid root with CPython 3.14/3.15 in $SID (about 2-3 minutes, ~1.3 GB; log: $LOG)" >&2
    build_root
    exit 0
}

main "$@"
